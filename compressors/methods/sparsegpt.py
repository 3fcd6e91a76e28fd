"""SparseGPT (Frantar & Alistarh, arXiv 2301.00774): OBS mask selection and weight reconstruction.

The maths is in :mod:`compressors.ops.sparsegpt`; this module runs it layer by layer with the
sequential driver and stores the result as :class:`compressors.packed.SparseLinear`.
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
from compressors.calibration import LayerStats, calibration_tokens, sequential_compress
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

    def compress(self, model: Any, tokenizer: Any, config: SparseGPTConfig, ctx: RunContext) -> Any:
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

        self.last_report = sequential_compress(
            model,
            calibration_tokens(ctx),
            "hessian",
            solve,
            ctx,
            true_sequential=config.true_sequential,
            stage="sparsegpt",
        )
        return model
