"""Round-to-nearest (RTN) weight quantization: the no-data baseline every other quantizer is measured against.

Each weight is rounded to the nearest point of a uniform grid fitted to its group's min/max
(asymmetric) or max-abs (symmetric); optional MSE clipping search. No calibration data, no error
compensation: at 3 bits it degrades quickly (GPTQ paper, Table 3: OPT-125M 4-bit 37.28 vs GPTQ 31.12).

Streams block by block from a safetensors checkpoint (:mod:`compressors.streaming`, ``block_step``).
Precision: weights are read in their stored dtype and quantized in float32 (grid, scale and zero in
float32; scales stored as float16); no forward pass runs.
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
from compressors.methods.layerwise import check_bits, check_group_size, layerwise_estimate, quantized_module
from compressors.ops.quant_grid import quantize_rtn
from knowledge.ids import MethodId


@dataclass
class RTNConfig(CompressorConfig):
    bits: int = field(default=4, metadata={"help": "Bits per weight", "choices": [2, 3, 4, 8]})
    group_size: int = field(
        default=128,
        metadata={
            "help": "Input columns sharing one scale/zero; -1 = one per output channel",
            "min": -1,
            "max": 4096,
        },
    )
    sym: bool = field(default=False, metadata={"help": "Symmetric grid (no zero-point stored)"})
    mse: bool = field(
        default=False,
        metadata={"help": "Search the clipping range that minimises the error (helps at 2-3 bits)"},
    )

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_group_size(self.group_size)


@register
class RTN(Compressor[RTNConfig]):
    id = CompressorId("rtn")
    implements = (MethodId("rtn"),)
    name = "Round-to-nearest"
    phase = "post-training"
    impact = "static"
    needs_calibration = False
    config_cls = RTNConfig
    summary = "Rounds each weight to a uniform low-bit grid per group; no data needed, the baseline for GPTQ."

    def estimate(
        self, shape: ModelShape, config: RTNConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        return layerwise_estimate(shape, "rtn", group_size=config.group_size)

    def block_step(self, config: RTNConfig) -> BlockStep:
        """Data-free, so it streams without calibration passes (see :meth:`_solve_weight` for the precision)."""
        return BlockStep(solve_weight=self._solve_weight(config))

    @staticmethod
    def _solve_weight(config: RTNConfig) -> WeightSolveFn:
        """Each weight is read in its stored dtype and quantized in float32 (the group's min/max, scale
        and zero are float32; scales are stored as float16), so a bf16 checkpoint streamed block by block
        and the same checkpoint loaded whole in float32 give the same codes bit for bit."""

        def solve_weight(bi: int, name: str, layer: nn.Module) -> nn.Module:
            q, s, z = quantize_rtn(
                get_weight(layer).detach(), config.bits, config.group_size, sym=config.sym, mse=config.mse
            )
            return quantized_module(layer, q, s, z, config.bits, config.group_size, config.sym)

        return solve_weight

    def compress(self, model: Any, tokenizer: Any, config: RTNConfig, ctx: RunContext) -> Any:
        _, blocks = find_blocks(model)
        solve_weight = self._solve_weight(config)
        total = sum(len(linear_layers(b)) for b in blocks)
        done = 0
        for bi, block in enumerate(blocks):
            done += len(
                compress_block_weights(block, bi, len(blocks), solve_weight, ctx, count=(done, total))
            )
        return model
