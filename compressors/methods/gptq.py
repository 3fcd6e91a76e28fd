"""GPTQ (Frantar et al., arXiv 2210.17323): layer-wise quantization with Hessian-based error compensation.

The maths is in :mod:`compressors.ops.gptq`; this module walks the model with the sequential driver
(:mod:`compressors.calibration`: each layer sees the outputs of the already-quantized layers before
it) and stores every layer packed (:class:`compressors.packed.QuantizedLinear`).

Streams block by block from a safetensors checkpoint (:mod:`compressors.streaming`, ``block_step``).
Precision: the block's forward and its calibration activations run in float32 (the driver's compute
dtype, as the whole-model path loads the model); the Hessian is accumulated in float32 and the
Cholesky factorisation, inverse and column sweep are float32. The next block's inputs are the outputs
of the *quantized* block, in both paths.
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
    ConfigError,
    CostEstimate,
    ModelShape,
    RunContext,
    check_range,
    register,
)
from compressors.calibration import (
    BlockStep,
    LayerStats,
    SolveFn,
    calibration_tokens,
    sequential_compress,
)
from compressors.layers import get_weight, set_attribute
from compressors.methods.layerwise import check_bits, check_group_size, layerwise_estimate, quantized_module
from compressors.ops.gptq import gptq_quantize
from knowledge.ids import MethodId


@dataclass
class GPTQConfig(CompressorConfig):
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
    act_order: bool = field(
        default=True, metadata={"help": "Quantize the most active input columns first (helps most at 3 bits)"}
    )
    # On by default: it is the act-order layout engines load (compressed-tensors' actorder="weight";
    # its g_idx layout was removed from compressed-tensors in 2026, and GGUF has no column-order field).
    static_groups: bool = field(
        default=True,
        metadata={
            "help": "With act-order: fix group grids up front in column order, so no permutation is stored "
            "and vLLM/llama.cpp exports work (off: grids follow the permuted order; Shrinkwise-only)"
        },
    )
    percdamp: float = field(
        default=0.01,
        metadata={
            "help": "Dampening added to the Hessian diagonal, as a fraction of its mean",
            "min": 0.0,
            "max": 1.0,
        },
    )
    blocksize: int = field(
        default=128, metadata={"help": "Columns per lazy-update block (speed only)", "min": 16, "max": 4096}
    )
    true_sequential: bool = field(
        default=True,
        metadata={
            "help": "Inside a block, calibrate o_proj on quantized q/k/v outputs, down_proj on quantized up/gate, ..."
        },
    )
    mse: bool = field(default=False, metadata={"help": "Search the clipping range of each group's grid"})

    def __post_init__(self) -> None:
        check_bits(self.bits)
        check_group_size(self.group_size)
        check_range("percdamp", self.percdamp, 0.0, 1.0)
        if not (16 <= self.blocksize <= 4096):
            raise ConfigError(
                f"blocksize={self.blocksize!r} is out of range; it must be between 16 and 4096 (default 128)"
            )


@register
class GPTQ(Compressor[GPTQConfig]):
    id = CompressorId("gptq")
    implements = (MethodId("gptq"),)
    name = "GPTQ"
    phase = "post-training"
    impact = "static"
    needs_calibration = True
    config_cls = GPTQConfig
    summary = "Quantizes weights column by column, compensating each rounding error with the inverse Hessian of the layer's inputs."

    def estimate(
        self, shape: ModelShape, config: GPTQConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        return layerwise_estimate(
            shape,
            "gptq",
            calib_samples=calib.samples,
            calib_seq=calib.seq_len,
            group_size=config.group_size,
            blocksize=config.blocksize,
        )

    def block_step(self, config: GPTQConfig) -> BlockStep:
        """Calibrated: the block runs in the driver's compute dtype (float32), the Hessian ``2XXᵀ`` is
        accumulated in float32 and the Cholesky factorisation and column sweep are float32
        (:func:`compressors.ops.gptq.gptq_quantize`); the next block's inputs are the outputs of this
        block *after* quantization (GPTQ's sequential mode), in the streamed and whole-model walks alike.
        """
        return BlockStep(
            stat="hessian", solve=self._solve(config), true_sequential=config.true_sequential, stage="gptq"
        )

    @staticmethod
    def _solve(config: GPTQConfig) -> SolveFn:
        def solve(bi: int, name: str, layer: nn.Module, stats: LayerStats) -> nn.Module | None:
            r = gptq_quantize(
                get_weight(layer).detach(),
                stats.value,
                bits=config.bits,
                group_size=config.group_size,
                sym=config.sym,
                act_order=config.act_order,
                static_groups=config.static_groups,
                percdamp=config.percdamp,
                blocksize=config.blocksize,
                mse=config.mse,
            )
            new = quantized_module(
                layer, r.codes, r.scale, r.zero, config.bits, config.group_size, config.sym, r.perm
            )
            set_attribute(new, "_solve_info", {"loss": r.loss})  # read back by sequential_compress
            return new

        return solve

    def compress(self, model: Any, tokenizer: Any, config: GPTQConfig, ctx: RunContext) -> Any:
        self.last_report = sequential_compress(
            model,
            calibration_tokens(ctx),
            "hessian",
            self._solve(config),
            ctx,
            true_sequential=config.true_sequential,
            stage="gptq",
        )
        return model
