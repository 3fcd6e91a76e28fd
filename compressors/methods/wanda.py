"""Wanda (Sun et al., arXiv 2306.11695): prune by |weight| × input activation norm, per output row.

Activation norms come from the sequential driver (each block calibrated on the outputs of the
already-pruned blocks before it, as in the authors' code); no weight update.

Streams block by block from a safetensors checkpoint (:mod:`compressors.streaming`, ``block_step``).
Precision: the block's forward and its calibration activations run in float32 (the driver's compute
dtype, as the whole-model path loads the model); the per-input squared norms are accumulated in float32
and the scores ``|W|·‖X‖`` computed in float32; kept values are stored as float16.
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
    register,
)
from compressors.calibration import BlockStep, LayerStats, SolveFn, calibration_tokens, sequential_compress
from compressors.layers import get_weight
from compressors.methods.layerwise import layerwise_estimate, sparse_module
from compressors.methods.magnitude import PruningConfig
from compressors.ops.wanda import wanda_mask
from knowledge.ids import MethodId


@dataclass
class WandaConfig(PruningConfig):
    true_sequential: bool = field(
        default=False,
        metadata={
            "help": "Re-measure activations after each step inside a block (the paper measures a block in one pass)"
        },
    )


@register
class Wanda(Compressor[WandaConfig]):
    id = CompressorId("wanda")
    implements = (MethodId("wanda"),)
    name = "Wanda"
    phase = "post-training"
    impact = "static"
    needs_calibration = True
    config_cls = WandaConfig
    summary = "Prunes the weights with the smallest |W|·‖X‖ in each output row; one calibration pass, no weight update."

    def estimate(
        self, shape: ModelShape, config: WandaConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        return layerwise_estimate(shape, "wanda", calib_samples=calib.samples, calib_seq=calib.seq_len)

    def block_step(self, config: WandaConfig) -> BlockStep:
        """Calibrated on per-input squared norms (float32: see the module docstring); the same ``solve``
        as :meth:`compress`, so the streamed and whole-model walks give one result."""
        return BlockStep(
            stat="sq_norms", solve=self._solve(config), true_sequential=config.true_sequential, stage="wanda"
        )

    @staticmethod
    def _solve(config: WandaConfig) -> SolveFn:
        sparsity, n, m = config.nm

        def solve(bi: int, name: str, layer: nn.Module, stats: LayerStats) -> nn.Module | None:
            w = get_weight(layer).detach().float()
            mask = wanda_mask(w, stats.value, sparsity, n, m)
            return sparse_module(layer, w.masked_fill(mask, 0), config.pattern)

        return solve

    def compress(self, model: Any, tokenizer: Any, config: WandaConfig, ctx: RunContext) -> Any:
        self.last_report = sequential_compress(
            model,
            calibration_tokens(ctx),
            "sq_norms",
            self._solve(config),
            ctx,
            true_sequential=config.true_sequential,
            stage="wanda",
        )
        return model
