"""The paper's CPU-inference method: dynamic int8 quantization of the linear layers.

Weights are quantized once to int8, symmetric, one scale per output channel; activations are quantized
to 8 bits **per input at run time** (each token's range is computed when it arrives: that is what makes
the method "dynamic"), the matrix product runs in integer arithmetic (FBGEMM / x86 or
oneDNN kernels through ``torch.ops.quantized.linear_dynamic``) and is rescaled to float. This is the
scheme of PyTorch's ``quantize_dynamic`` and of the int8 CPU runtimes in the paper's "efficient
inference on CPUs" line of work (Shen et al., arXiv 2311.00502, for INT4; here INT8).

Saved packed: int8 weight + float32 per-channel scales (8.06 bits per weight for a 576-wide layer).
On load, the FBGEMM weight is prepacked once and cached; where no quantized engine exists the layer
falls back to a dequantized float matmul (same numbers for the weights, no speed-up).

Streams block by block from a safetensors checkpoint (:mod:`compressors.streaming`, ``block_step``)
unless ``include_lm_head`` is set (the head is not a block's layer: that run loads the whole model).
Precision: each weight is read in its stored dtype and upcast to float32; the per-channel absmax, the
scale and the rounding are float32 (scales stored float32, a bias as float32); no forward pass runs,
so the streamed result is the whole-model one bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

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
from compressors.layers import find_blocks, get_bias, get_weight, linear_layers, set_module
from compressors.packed import PackedModule, register_packed
from compressors.progress import Count
from compressors.throughput import Work, get_throughput
from knowledge.ids import MethodId

if TYPE_CHECKING:
    from torch import nn
    from typing_extensions import Self  # typing.Self from Python 3.11

    from compressors.calibration import BlockStep

log = logging.getLogger(__name__)


def quantize_int8_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per row: ``w ~= q * scale[:, None]``, ``q`` in [-127, 127]."""
    w = w.detach().float()
    scale = (w.abs().amax(1) / 127.0).clamp(min=1e-12)
    q = torch.clamp(torch.round(w / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


# 8-bit activations (reduce_range=False): on one 512-token window of the demo, 7-bit activations
# (PyTorch's default for FBGEMM, which avoids int16 saturation of u8*s8 pair sums on AVX2) cost +13 %
# perplexity, 8-bit +2 %; saturation is possible in principle on AVX2 without VNNI.
REDUCE_RANGE = False


def _quantized_engine_ok() -> bool:
    return any(
        e in torch.backends.quantized.supported_engines for e in ("fbgemm", "x86", "onednn", "qnnpack")
    )


@register_packed
class Int8DynamicLinear(PackedModule):
    """int8 weight (per output channel) x activations quantized per call; integer GEMM on the CPU."""

    packed_type = "int8_dynamic_linear"
    cache_dequantized = False  # the int8 kernel reads the packed weight; no float copy is kept
    # buffers (registered in __init__), declared so the checker knows them as tensors, not submodules
    qweight: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        qweight: torch.Tensor,
        scales: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> None:
        super().__init__(in_features, out_features)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)
        self._packed_params: torch.ScriptObject | None = None

    @classmethod
    def from_float(cls, layer: torch.nn.Module) -> Int8DynamicLinear:
        w = get_weight(layer)
        q, s = quantize_int8_per_channel(w)
        b = get_bias(layer)
        return cls(
            w.shape[1],
            w.shape[0],
            q.contiguous(),
            s.contiguous(),
            None if b is None else b.detach().float().contiguous().clone(),
        )

    def dequantize(self) -> torch.Tensor:
        return self.qweight.float() * self.scales.float()[:, None]

    def _prepacked(self) -> torch.ScriptObject:
        packed = self._packed_params
        if packed is None:
            import warnings

            with warnings.catch_warnings():  # torch 2.13 marks quantized-tensor creation as deprecated
                warnings.simplefilter("ignore", UserWarning)
                qw = torch._make_per_channel_quantized_tensor(
                    self.qweight, self.scales.double(), torch.zeros(self.out_features, dtype=torch.long), 0
                )
                # no bias inside: the output is rescaled per token first (see forward)
                packed = self._packed_params = torch.ops.quantized.linear_prepack(qw, None)
        return packed

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Self:
        self._packed_params = None
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and x.device.type == "cpu" and _quantized_engine_ok():
            shape = x.shape
            x2 = x.reshape(-1, shape[-1])
            # FBGEMM quantizes its input with ONE range per call; dividing every token (row) by its own
            # max first makes that range per token: (D X) W^T = D (X W^T). One window of the demo:
            # per-call range +13 % perplexity, per-token range +2 %.
            s = x2.abs().amax(1, keepdim=True).clamp(min=1e-12)
            y: torch.Tensor = (
                torch.ops.quantized.linear_dynamic((x2 / s).contiguous(), self._prepacked(), REDUCE_RANGE) * s
            )
            if self.bias is not None:
                y = y + self.bias
            return y.reshape(*shape[:-1], self.out_features)
        b = self.bias
        return F.linear(x, self.dequantize().to(x.dtype), None if b is None else b.to(x.dtype))

    def packed_state(self) -> dict[str, torch.Tensor]:
        state = {"qweight": self.qweight, "scales": self.scales}
        if self.bias is not None:
            state["bias"] = self.bias
        return state

    def meta(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "activations": "dynamic int8",
        }

    @classmethod
    def from_packed(cls, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Int8DynamicLinear:
        return cls(
            meta["in_features"], meta["out_features"], state["qweight"], state["scales"], state.get("bias")
        )


@dataclass
class CPUInferenceConfig(CompressorConfig):
    include_lm_head: bool = field(
        default=False,
        metadata={
            "help": "Also quantize the output projection (lm_head). Faster decoding; an lm_head tied to the "
            "embedding is then stored twice (int8 head + float embedding)"
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.include_lm_head, bool):
            from compressors.base import ConfigError

            raise ConfigError(f"include_lm_head={self.include_lm_head!r} must be true or false")


@register
class CPUInference(Compressor[CPUInferenceConfig]):
    id = CompressorId("cpu-inference")
    # int8 weights, so it runs dynamic-int8 (8 bits per weight), not the paper's INT4 CPU runtime
    # (cpu-inference, 4.25 bits): crediting it there would promise a footprint it does not write
    implements = (MethodId("dynamic-int8"),)
    name = "Dynamic int8 (CPU inference)"
    phase = "inference"
    impact = "dynamic"
    needs_calibration = False
    config_cls = CPUInferenceConfig
    summary = (
        "int8 weights per channel, activations quantized per input at run time; integer GEMM "
        "kernels make linear layers faster on x86 CPUs."
    )

    def estimate(
        self, shape: ModelShape, config: CPUInferenceConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        # One pass over the weights. Peak process RSS: the runtime (~400 MB of torch + transformers), the
        # float model with load-time copies (x1.5) and the int8 copy. Checked on the demo (135 M
        # parameters): estimate 1.3 GB, measured 1.36 GB; time measured 1.8 s (the old fixed-rate estimate: 2.7 s).
        peak = int(400e6 + shape.n_params * shape.dtype_bytes * 1.5 + shape.linear_params * 1.1)
        # per weight: absmax per channel, scale, round, clamp, cast to int8 and the packed copy: about
        # 12 float32 read+write passes; per layer ~100 small ops (module swap, bookkeeping)
        tp = get_throughput()
        work = Work(bytes_moved=8.0 * 12 * shape.linear_params, small_ops=100.0 * 7 * shape.n_layers)
        return CostEstimate(
            peak, work.seconds(tp), "one pass over the weights, no calibration", 2.0, tp.describe()
        )

    def block_step(self, config: CPUInferenceConfig) -> BlockStep | None:
        """Data-free: each block's linear layers are quantized from their weights alone (float32 absmax
        and rounding: see the module docstring). None with ``include_lm_head``: the head is outside the
        blocks (see :meth:`whole_model_reason`)."""
        from compressors.calibration import BlockStep

        if config.include_lm_head:
            return None
        return BlockStep(solve_weight=self._solve_weight, stage="quantize")

    def whole_model_reason(self, config: CPUInferenceConfig) -> str:
        if config.include_lm_head:
            return "include_lm_head quantizes the output head, which is not a decoder block's layer"
        return super().whole_model_reason(config)

    @staticmethod
    def _solve_weight(bi: int, name: str, layer: nn.Module) -> nn.Module:
        return Int8DynamicLinear.from_float(layer)

    def compress(self, model: Any, tokenizer: Any, config: CPUInferenceConfig, ctx: RunContext) -> Any:
        from compressors.calibration import compress_block_weights

        _, blocks = find_blocks(model)
        head = model.get_output_embeddings() if config.include_lm_head else None
        total = sum(len(linear_layers(b)) for b in blocks) + (head is not None)
        done = 0
        for bi, block in enumerate(blocks):
            done += len(
                compress_block_weights(block, bi, len(blocks), self._solve_weight, ctx, count=(done, total))
            )
        if head is not None:
            for name, m in model.named_modules():
                if m is head:
                    set_module(model, name, Int8DynamicLinear.from_float(m))
                    ctx.report("quantize", 1.0, name, count=Count(total, total, "layers"))
                    break
        if config.include_lm_head:
            model.config.tie_word_embeddings = False
        return model
