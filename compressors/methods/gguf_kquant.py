"""GGUF k-quants (Q4_K_M, Q5_K_M, Q6_K, Q8_0) made by llama.cpp's own quantizer, with an importance matrix.

This is the recipe the recommender ranks first for CPU, Apple and local users, so Shrinkwise runs the
real thing instead of an imitation: the model is written as an F16 GGUF, ``llama_model_quantize``
(llama.cpp's C API, through llama-cpp-python) quantizes it with the chosen type's own per-tensor mix
(e.g. Q4_K_M keeps half of ``attn_v``/``ffn_down`` at Q6_K, and falls back to Q5_0/Q8_0 for rows that
are not a multiple of 256, as in SmolLM2's 576-wide layers), and the resulting blocks are kept byte for
byte (:class:`compressors.packed_gguf.GGUFBlockLinear`). So the perplexity Shrinkwise reports is that of
the file llama.cpp runs, and the GGUF export writes the same bytes back.

Importance matrix (on by default): the mean of each input column's squared activation over the
calibration text, per linear layer, which is what llama.cpp's ``llama-imatrix`` tool computes; it is
passed to the quantizer through ``llama_model_quantize_params.imatrix``, which weights the rounding
error of each column by how much the column's input matters.

One deliberate difference from a stock Q4_K_M file: token embeddings and the output layer stay in 16
bits (``token_embedding_type`` and ``output_tensor_type`` = F16, what ``llama-quantize
--token-embedding-type f16 --output-tensor-type f16`` does), as every other Shrinkwise method keeps
them; stock files store them at Q4_K/Q6_K, smaller and slightly worse.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from compressors.base import (
    DEFAULT_CALIBRATION,
    Calibration,
    CompressionError,
    Compressor,
    CompressorConfig,
    CompressorId,
    ConfigError,
    CostEstimate,
    ModelShape,
    RunContext,
    check_choice,
    register,
)
from compressors.layers import (
    find_blocks,
    get_bias,
    get_weight,
    iter_block_linears,
    linear_layers,
    set_module,
)
from compressors.methods.layerwise import layerwise_estimate
from knowledge.ids import MethodId

log = logging.getLogger(__name__)

#: llama.cpp's llama_ftype values (include/llama.h)
FTYPES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "Q8_0": 7}
GGML_TYPE_F16 = 1


@dataclass
class GGUFKQuantConfig(CompressorConfig):
    type: str = field(
        default="Q4_K_M",
        metadata={"help": "llama.cpp quantization type", "choices": list(FTYPES)},
    )
    imatrix: bool = field(
        default=True,
        metadata={"help": "Weight the rounding by an importance matrix from the calibration text"},
    )

    def __post_init__(self) -> None:
        check_choice("type", self.type, list(FTYPES))


def collect_imatrix(model: nn.Module, calibration: torch.Tensor, ctx: RunContext) -> dict[str, np.ndarray]:
    """Mean squared input activation per column of every block linear layer (llama-imatrix's statistic)."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    path, blocks = find_blocks(model)
    hooks = []

    def hook_for(name: str) -> Any:
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            sums[name] = (
                sums.get(name, torch.zeros(x.shape[-1], dtype=torch.float64)) + (x * x).sum(0).double()
            )
            counts[name] = counts.get(name, 0) + x.shape[0]

        return hook

    for bi, name, layer in iter_block_linears(model):
        full = f"{path}.{bi}.{name}"
        hooks.append(layer.register_forward_pre_hook(hook_for(full)))
    try:
        with torch.no_grad():
            for i, row in enumerate(calibration):
                ctx.check_cancelled()
                model(input_ids=row[None], use_cache=False)
                ctx.report(
                    "importance matrix",
                    0.4 * (i + 1) / len(calibration),
                    f"sample {i + 1}/{len(calibration)}",
                )
    finally:
        for h in hooks:
            h.remove()
    return {k: (sums[k] / counts[k]).float().numpy() for k in sums}


def _imatrix_array(llama_cpp: Any, entries: dict[str, np.ndarray]) -> tuple[Any, list[Any]]:
    """A NULL-terminated ``llama_model_imatrix_data`` array; the second item keeps the buffers alive."""
    keep: list[Any] = []
    arr = (llama_cpp.llama_model_imatrix_data * (len(entries) + 1))()
    for i, (name, values) in enumerate(entries.items()):
        buf = np.ascontiguousarray(values, dtype=np.float32)
        keep.append(buf)
        name_b = name.encode()
        keep.append(name_b)
        arr[i].name = name_b
        arr[i].data = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = buf.size
    arr[len(entries)].name = None
    return arr, keep


@register
class GGUFKQuant(Compressor[GGUFKQuantConfig]):
    id = CompressorId("gguf-kquant")
    implements = (MethodId("gguf-k-quants"),)
    name = "GGUF k-quants (llama.cpp)"
    phase = "post-training"
    impact = "static"
    needs_calibration = False  # the importance matrix is optional (imatrix=false runs without text)
    config_cls = GGUFKQuantConfig
    output_format = "gguf"
    summary = "llama.cpp's own Q4_K_M/Q5_K_M/Q6_K/Q8_0 quantizer, with an importance matrix from your text."

    def uses_calibration(self, config: GGUFKQuantConfig) -> bool:
        return config.imatrix

    def check_model(self, model_type: str) -> None:
        from compressors.gguf_export import _arch

        _arch(model_type)

    def whole_model_reason(self, config: GGUFKQuantConfig) -> str:
        """Why it does not stream block by block (:mod:`compressors.streaming`)."""
        return "llama.cpp's quantizer (llama_model_quantize) rewrites a whole GGUF file, written from the whole model"

    def estimate(
        self, shape: ModelShape, config: GGUFKQuantConfig, calib: Calibration = DEFAULT_CALIBRATION
    ) -> CostEstimate:
        # weight passes like RTN (llama.cpp's quantizer is a few passes over the weights), plus the
        # importance matrix's forward passes when it is on (counted as Wanda's statistics pass)
        base = layerwise_estimate(shape, "wanda" if config.imatrix else "rtn", calib.samples, calib.seq_len)
        # the F16 GGUF written for llama.cpp and its quantized copy sit on disk, not in memory
        return CostEstimate(
            base.peak_memory_bytes,
            base.seconds,
            base.note + "; an F16 copy of the model is written to a temporary folder",
            base.uncertainty,
            base.basis,
        )

    def compress(self, model: Any, tokenizer: Any, config: GGUFKQuantConfig, ctx: RunContext) -> Any:
        from compressors.engines import _llama_cpp
        from compressors.gguf_export import export_gguf

        llama_cpp = _llama_cpp()
        imatrix: dict[str, np.ndarray] | None = None
        if config.imatrix:
            if ctx.calibration is None:
                raise ConfigError("imatrix=true needs calibration text; give some or set imatrix=false")
            imatrix = collect_imatrix(model, ctx.calibration, ctx)
        names = _gguf_names(model)
        with tempfile.TemporaryDirectory(prefix="shrinkwise-gguf-") as tmp:
            src = Path(tmp) / "f16.gguf"
            dst = Path(tmp) / f"{config.type}.gguf"
            ctx.report("write F16 GGUF", 0.45, str(src.name))
            export_gguf(model, tokenizer, src, float_type="F16")
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = FTYPES[config.type]
            params.nthread = max(1, min(8, os.cpu_count() or 1))
            params.token_embedding_type = GGML_TYPE_F16
            params.output_tensor_type = GGML_TYPE_F16
            keep: list[Any] = []
            if imatrix is not None:
                arr, keep = _imatrix_array(llama_cpp, {names[k]: v for k, v in imatrix.items() if k in names})
                params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
                keep.append(arr)
            ctx.check_cancelled()
            ctx.report(
                "llama.cpp quantize", 0.5, config.type + (" with importance matrix" if imatrix else "")
            )
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
            del keep
            if rc != 0:
                raise CompressionError(f"llama.cpp's quantizer failed (return code {rc}) for {config.type}")
            _load_blocks(model, dst, {v: k for k, v in names.items()}, ctx)
        return model


def _gguf_names(model: nn.Module) -> dict[str, str]:
    """Hugging Face path of every block linear layer -> its GGUF tensor name (``blk.3.attn_q.weight``)."""
    import gguf

    from compressors.gguf_export import _arch

    cfg: Any = model.config
    arch, _ = _arch(str(getattr(cfg, "model_type", "")))
    tmap = gguf.get_tensor_name_map(
        gguf.MODEL_ARCH.LLAMA if arch == "llama" else gguf.MODEL_ARCH.QWEN2, int(cfg.num_hidden_layers)
    )
    path, _blocks = find_blocks(model)
    out: dict[str, str] = {}
    for bi, name, _layer in iter_block_linears(model):
        full = f"{path}.{bi}.{name}"
        mapped = tmap.get_name(full + ".weight", try_suffixes=(".weight",))
        if mapped is None:
            raise CompressionError(f"{full} has no GGUF tensor name")
        out[full] = str(mapped)
    return out


def _load_blocks(model: nn.Module, gguf_path: Path, hf_of: dict[str, str], ctx: RunContext) -> None:
    """Replace every block linear layer by the blocks llama.cpp wrote (rows back in Hugging Face order)."""
    import gguf

    from compressors.gguf_export import _qk_row_order
    from compressors.packed_gguf import GGUFBlockLinear

    cfg: Any = model.config
    n_head = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_head)
    permute = str(cfg.model_type) in ("llama", "mistral")
    reader = gguf.GGUFReader(str(gguf_path))
    path, blocks = find_blocks(model)
    tensors = {t.name: t for t in reader.tensors}
    done = 0
    for gname, hf in hf_of.items():
        t = tensors.get(gname)
        if t is None:
            raise CompressionError(f"llama.cpp's output has no tensor {gname}")
        bi, name = int(hf[len(path) + 1 :].split(".", 1)[0]), hf[len(path) + 1 :].split(".", 1)[1]
        layer = linear_layers(blocks[bi])[name]
        out_f, in_f = get_weight(layer).shape
        data = np.array(t.data, dtype=np.uint8).reshape(out_f, -1)
        if permute and name.endswith(("q_proj", "k_proj")):
            order = _qk_row_order(out_f, n_head if name.endswith("q_proj") else n_kv)
            undone = np.empty_like(data)
            undone[order] = data
            data = undone
        bias = get_bias(layer)
        packed = GGUFBlockLinear(
            in_f,
            out_f,
            t.tensor_type.name,
            torch.from_numpy(data.copy()),
            None if bias is None else bias.detach(),
        )
        set_module(blocks[bi], name, packed)
        done += 1
        ctx.report(
            f"block {bi + 1}/{len(blocks)}", 0.5 + 0.5 * done / len(hf_of), f"{name} {t.tensor_type.name}"
        )
