"""Magnitude pruning: per layer, zero the weights of smallest absolute value (unstructured or N:M).

The data-free baseline of the SparseGPT and Wanda papers; stored as :class:`compressors.packed.SparseLinear`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compressors.base import (
    DEFAULT_CALIBRATION,
    Calibration,
    Compressor,
    CompressorConfig,
    CompressorId,
    CostEstimate,
    ModelShape,
    RunContext,
    register,
)
from compressors.layers import find_blocks, get_weight, iter_block_linears, set_module
from compressors.methods.layerwise import PATTERNS, check_pattern, layerwise_estimate, sparse_module
from compressors.ops.magnitude import magnitude_mask
from compressors.progress import Count
from knowledge.ids import MethodId


@dataclass
class PruningConfig(CompressorConfig):
    sparsity: float = field(
        default=0.5,
        metadata={"help": "Fraction of weights set to zero (unstructured)", "min": 0.0, "max": 0.95},
    )
    pattern: str = field(
        default="unstructured",
        metadata={
            "help": "unstructured, or N:M (N zeros in every M consecutive inputs; 2:4 runs fast on NVIDIA sparse tensor cores)",
            "choices": PATTERNS,
        },
    )

    def __post_init__(self) -> None:
        check_pattern(self.pattern, self.sparsity)

    @property
    def nm(self) -> tuple[float, int, int]:
        return check_pattern(self.pattern, self.sparsity)


@dataclass
class MagnitudeConfig(PruningConfig):
    pass


@register
class Magnitude(Compressor[MagnitudeConfig]):
    id = CompressorId("magnitude")
    implements = (MethodId("magnitude-pruning"),)
    name = "Magnitude pruning"
    phase = "post-training"
    impact = "static"
    needs_calibration = False
    output_format = "shrinkwise-packed"
    config_cls = MagnitudeConfig
    summary = "Zeroes the smallest weights of each layer; no data, no weight update. The pruning baseline."

    def estimate(
        self, shape: ModelShape, config: MagnitudeConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        return layerwise_estimate(shape, "magnitude")

    def compress(self, model: Any, tokenizer: Any, config: MagnitudeConfig, ctx: RunContext) -> Any:
        sparsity, n, m = config.nm
        _, blocks = find_blocks(model)
        layers = list(iter_block_linears(model))
        for k, (bi, name, layer) in enumerate(layers):
            w = get_weight(layer).detach().float()
            mask = magnitude_mask(w, sparsity, n, m)
            set_module(blocks[bi], name, sparse_module(layer, w.masked_fill(mask, 0), config.pattern))
            ctx.report(
                f"block {bi + 1}/{len(blocks)}",
                (k + 1) / len(layers),
                name,
                count=Count(k + 1, len(layers), "layers"),
            )
        return model
