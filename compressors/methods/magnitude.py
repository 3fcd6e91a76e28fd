"""Magnitude pruning: per layer, zero the weights of smallest absolute value (unstructured or N:M).

The data-free baseline of the SparseGPT and Wanda papers; stored as :class:`compressors.packed.SparseLinear`.

Streams block by block from a safetensors checkpoint (:mod:`compressors.streaming`, ``block_step``).
Precision: each weight is read in its stored dtype and upcast to float32 (exact from bf16/fp16), the
mask is chosen on float32 magnitudes, kept values are stored as float16; no forward pass runs, so the
streamed result is the whole-model one bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

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
from compressors.calibration import BlockStep, WeightSolveFn, compress_block_weights
from compressors.layers import find_blocks, get_weight, linear_layers
from compressors.methods.layerwise import PATTERNS, check_pattern, layerwise_estimate, sparse_module
from compressors.ops.magnitude import magnitude_mask
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

    def block_step(self, config: MagnitudeConfig) -> BlockStep:
        """Data-free, so it streams without calibration passes (float32 magnitudes: see the module docstring)."""
        return BlockStep(solve_weight=self._solve_weight(config))

    @staticmethod
    def _solve_weight(config: MagnitudeConfig) -> WeightSolveFn:
        sparsity, n, m = config.nm

        def solve_weight(bi: int, name: str, layer: nn.Module) -> nn.Module:
            w = get_weight(layer).detach().float()
            mask = magnitude_mask(w, sparsity, n, m)
            return sparse_module(layer, w.masked_fill(mask, 0), config.pattern)

        return solve_weight

    def compress(self, model: Any, tokenizer: Any, config: MagnitudeConfig, ctx: RunContext) -> Any:
        _, blocks = find_blocks(model)
        solve_weight = self._solve_weight(config)
        total = sum(len(linear_layers(b)) for b in blocks)
        done = 0
        for bi, block in enumerate(blocks):
            done += len(
                compress_block_weights(block, bi, len(blocks), solve_weight, ctx, count=(done, total))
            )
        return model
