"""Round-to-nearest (RTN) weight quantization: the no-data baseline every other quantizer is measured against.

Each weight is rounded to the nearest point of a uniform grid fitted to its group's min/max
(asymmetric) or max-abs (symmetric); optional MSE clipping search. No calibration data, no error
compensation: at 3 bits it degrades quickly (GPTQ paper, Table 3: OPT-125M 4-bit 37.28 vs GPTQ 31.12).
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
from compressors.methods.layerwise import check_bits, check_group_size, layerwise_estimate, quantized_module
from compressors.ops.quant_grid import quantize_rtn
from compressors.progress import Count
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

    def compress(self, model: Any, tokenizer: Any, config: RTNConfig, ctx: RunContext) -> Any:
        path, blocks = find_blocks(model)
        layers = list(iter_block_linears(model))
        for k, (bi, name, layer) in enumerate(layers):
            q, s, z = quantize_rtn(
                get_weight(layer).detach(), config.bits, config.group_size, sym=config.sym, mse=config.mse
            )
            set_module(
                blocks[bi], name, quantized_module(layer, q, s, z, config.bits, config.group_size, config.sym)
            )
            ctx.report(
                f"block {bi + 1}/{len(blocks)}",
                (k + 1) / len(layers),
                name,
                count=Count(k + 1, len(layers), "layers"),
            )
        return model
