"""SparseGPT (Frantar & Alistarh, arXiv 2301.00774): OBS mask selection and weight reconstruction.

The maths is in :mod:`compressors.ops.sparsegpt`; this module runs it layer by layer with the
sequential driver and stores the result as :class:`compressors.packed.SparseLinear`.

Streams block by block from a safetensors checkpoint (:mod:`compressors.streaming`, ``block_step``).
Precision: the block's forward and its calibration activations run in float32 (the driver's compute
dtype, as the whole-model path loads the model); the Hessian ``2XXᵀ`` is accumulated in float32 and the
Cholesky factorisation of its inverse, the mask selection and the weight update are float32; kept
values are stored as float16. The next block's inputs are the outputs of the *pruned* block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from compressors.base import (
    DEFAULT_CALIBRATION,
    Calibration,
    Compressor,
    CompressorId,
    CostEstimate,
    ModelShape,
    RunContext,
    check_range,
    register,
)
from compressors.calibration import BlockStep, LayerStats, SolveFn, calibration_tokens, sequential_compress
from compressors.layers import get_weight, set_attribute
from compressors.methods.layerwise import layerwise_estimate, sparse_module
from compressors.methods.magnitude import PruningConfig
from compressors.ops.sparsegpt import sparsegpt_prune
from knowledge.ids import MethodId


@dataclass
class SparseGPTConfig(PruningConfig):
    percdamp: float = field(
        default=0.01,
        metadata={"help": "Hessian dampening, fraction of its mean diagonal", "min": 0.0, "max": 1.0},
    )
    blocksize: int = field(
        default=128,
        metadata={"help": "Columns per mask-selection and lazy-update block", "min": 16, "max": 4096},
    )
    true_sequential: bool = field(
        default=True, metadata={"help": "Calibrate each step of a block on the pruned previous steps"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("percdamp", self.percdamp, 0.0, 1.0)
        check_range("blocksize", self.blocksize, 16, 4096)


@register
class SparseGPT(Compressor[SparseGPTConfig]):
    id = CompressorId("sparsegpt")
    implements = (MethodId("sparsegpt"),)
    name = "SparseGPT"
    phase = "post-training"
    impact = "static"
    needs_calibration = True
    config_cls = SparseGPTConfig
    summary = "Prunes by second-order saliency and updates the remaining weights to keep each layer's output."

    def estimate(
        self, shape: ModelShape, config: SparseGPTConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        return layerwise_estimate(
            shape,
            "sparsegpt",
            blocksize=config.blocksize,
            calib_samples=calib.samples,
            calib_seq=calib.seq_len,
        )

    def block_step(self, config: SparseGPTConfig) -> BlockStep:
        """Calibrated on the Hessian (float32 statistics, Cholesky and update: see the module docstring);
        the same ``solve`` as :meth:`compress`, so the streamed and whole-model walks give one result."""
        return BlockStep(
            stat="hessian",
            solve=self._solve(config),
            true_sequential=config.true_sequential,
            stage="sparsegpt",
        )

    @staticmethod
    def _solve(config: SparseGPTConfig) -> SolveFn:
        sparsity, n, m = config.nm

        def solve(bi: int, name: str, layer: nn.Module, stats: LayerStats) -> nn.Module | None:
            r = sparsegpt_prune(
                get_weight(layer).detach(),
                stats.value,
                sparsity,
                n,
                m,
                percdamp=config.percdamp,
                blocksize=config.blocksize,
            )
            new = sparse_module(layer, r.weight, config.pattern)
            set_attribute(new, "_solve_info", {"loss": r.loss})  # read back by sequential_compress
            return new

        return solve

    def compress(self, model: Any, tokenizer: Any, config: SparseGPTConfig, ctx: RunContext) -> Any:
        self.last_report = sequential_compress(
            model,
            calibration_tokens(ctx),
            "hessian",
            self._solve(config),
            ctx,
            true_sequential=config.true_sequential,
            stage="sparsegpt",
        )
        return model
