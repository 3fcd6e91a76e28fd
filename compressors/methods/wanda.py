"""Wanda (Sun et al., arXiv 2306.11695): prune by |weight| × input activation norm, per output row.

Activation norms come from the sequential driver (each block calibrated on the outputs of the
already-pruned blocks before it, as in the authors' code); no weight update.
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
from compressors.calibration import LayerStats, calibration_tokens, sequential_compress
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

    def compress(self, model: Any, tokenizer: Any, config: WandaConfig, ctx: RunContext) -> Any:
        sparsity, n, m = config.nm

        def solve(bi: int, name: str, layer: nn.Module, stats: LayerStats) -> nn.Module | None:
            w = get_weight(layer).detach().float()
            mask = wanda_mask(w, stats.value, sparsity, n, m)
            return sparse_module(layer, w.masked_fill(mask, 0), config.pattern)

        self.last_report = sequential_compress(
            model,
            calibration_tokens(ctx),
            "sq_norms",
            solve,
            ctx,
            true_sequential=config.true_sequential,
            stage="wanda",
        )
        return model
