"""Export to GGUF, the file llama.cpp (and llama-cpp-python, Ollama, LM Studio) loads.

Why a writer of our own rather than llama.cpp's ``convert_hf_to_gguf.py``: the converter reads a
float checkpoint and would re-quantize it, throwing away what GPTQ or RTN chose. Here the integer
codes Shrinkwise computed are placed into llama.cpp's block formats directly, wherever a block
format can hold them exactly:

* 4-bit, symmetric (zero-point 8)  -> ``Q4_0``: ``w = d * (q - 8)``; codes and fp16 scales bit for bit.
* 4-bit, integer zero-points        -> ``Q4_1``: ``w = d * q + m`` with ``d = scale`` (bit for bit) and
  ``m = -zero * scale`` rounded to fp16 (the only rounding: one fp16 offset per block).
* 8-bit, symmetric (zero-point 128) -> ``Q8_0``: ``w = d * (q - 128)``; bit for bit.

A llama.cpp block is 32 consecutive input columns with one scale, so this holds when every block lies
inside one quantization group: a group size that is a multiple of 32, or per-channel, and no act-order
permutation (GGUF has no column-order field). Otherwise, and for 8-bit with zero-points, the layer is
**re-quantized** from Shrinkwise's dequantized weights with the ``gguf`` package's reference quantizer
into the nearest block type, and the note says so. 2- and 3-bit codes have no llama.cpp block type
this package can write (its k-quant writers are dequantize-only), so such results are refused.

Tensors that Shrinkwise left unquantized (embeddings, output layer, norms) are carried over in their
stored dtype (BF16/F16/F32; one-dimensional tensors in F32, as llama.cpp expects).

Architectures: ``llama`` and ``mistral`` (GGUF arch ``llama``; Q and K rows are permuted from Hugging
Face's rotate-half layout to llama.cpp's interleaved one, a row permutation that moves whole quantized
rows) and ``qwen2`` (no permutation). RoPE scaling variants (Llama 3.1's ``llama3`` rope) are refused
rather than written wrong.

Tokenizer: when the model came from a GGUF file (the demo model) its ``tokenizer.*`` metadata is copied
unchanged; otherwise a byte-level BPE ``tokenizer.json`` is converted (tokens, merges, special tokens,
chat template), with the pre-tokenizer named where the family is known and ``default`` otherwise.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from compressors.base import CompressionError
from compressors.packed import QuantizedLinear, packed_modules
from compressors.packed_gguf import GGUFBlockLinear

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: llama.cpp's block length for Q4_0/Q4_1/Q8_0
BLOCK = 32

_FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}

#: pre-tokenizer names llama.cpp knows, by a substring of the tokenizer's name or path
KNOWN_PRE_TOKENIZERS: tuple[tuple[str, str], ...] = (
    ("smollm", "smollm"),
    ("qwen2", "qwen2"),
    ("llama-3", "llama-bpe"),
    ("llama3", "llama-bpe"),
)


class GGUFUnsupported(CompressionError):
    """The result cannot be written as GGUF; the message says which part and why."""


@dataclass(frozen=True)
class GGUFExport:
    """What was written: the file, its block type and what was exact or re-quantized."""

    path: Path
    qtype: str  # "Q4_0" | "Q4_1" | "Q8_0"
    exact_layers: int
    requantized_layers: int
    note: str


@dataclass(frozen=True)
class _Plan:
    arch: str  # gguf arch name: "llama" | "qwen2"
    qtype_name: str
    permute_qk: bool


def _arch(model_type: str) -> tuple[str, bool]:
    if model_type in ("llama", "mistral"):
        return "llama", True
    if model_type == "qwen2":
        return "qwen2", False
    raise GGUFUnsupported(
        f"GGUF export supports llama, mistral and qwen2 models; this one is {model_type!r} "
        "(use the compressed-tensors export or the Shrinkwise checkpoint)"
    )


def _layer_type(m: QuantizedLinear) -> str:
    """The block type a layer's codes map to (exactly or after re-quantization)."""
    if m.bits == 4:
        return "Q4_0" if m.zero_const == 8 else "Q4_1"
    if m.bits == 8:
        return "Q8_0"
    raise GGUFUnsupported(
        f"{m.bits}-bit codes have no llama.cpp block type that this export can write exactly "
        "(Q4_0/Q4_1/Q8_0); re-run at 4 or 8 bits for a GGUF, or use the Shrinkwise checkpoint"
    )


def exact_reason(m: QuantizedLinear) -> str | None:
    """Why this layer cannot be carried over bit for bit (None when it can)."""
    if m.perm is not None:
        return "act-order (GGUF stores columns in their original order)"
    if m.in_features % BLOCK:
        return f"in_features {m.in_features} is not a multiple of {BLOCK}"
    if m.group_size != -1 and m.group_size % BLOCK:
        return f"group size {m.group_size} is not a multiple of {BLOCK}"
    if m.bits == 8 and m.zero_const != 128:
        return "8-bit with zero-points (llama.cpp's Q8_0 is symmetric)"
    if m.bits == 4 and m.zero_const is None and m.zero_bits is None:
        return "non-integer zero-points"
    return None


def _fp16_bytes(x: torch.Tensor) -> np.ndarray:
    return x.to(torch.float16).contiguous().numpy().view(np.uint8)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """[rows, blocks, 32] codes 0..15 -> [rows, blocks, 16] bytes: low nibble j, high nibble j+16."""
    out: np.ndarray = (q[..., :16] | (q[..., 16:] << 4)).astype(np.uint8)
    return out


def exact_blocks(m: QuantizedLinear, qtype: str) -> np.ndarray:
    """The layer's codes and scales as llama.cpp blocks, ``uint8 [out, in/32 * block bytes]``."""
    out_f, in_f = m.out_features, m.in_features
    n_blocks = in_f // BLOCK
    gs = in_f if m.group_size == -1 else m.group_size
    group_of_block = torch.arange(n_blocks) * BLOCK // gs
    scales = m.scales[:, group_of_block]  # stored dtype (fp16 by default): exact in fp16
    d = _fp16_bytes(scales).reshape(out_f, n_blocks, 2)
    q = m.codes().numpy().reshape(out_f, n_blocks, BLOCK)
    if qtype == "Q4_0":
        parts = [d, _nibbles(q)]
    elif qtype == "Q4_1":
        zero = m.zero_points()[:, group_of_block]
        offset = _fp16_bytes(-zero * scales.float()).reshape(out_f, n_blocks, 2)
        parts = [d, offset, _nibbles(q)]
    else:  # Q8_0, symmetric: q - 128 as int8
        parts = [d, (q.astype(np.int16) - 128).astype(np.int8).view(np.uint8)]
    return np.concatenate(parts, axis=-1).reshape(out_f, -1)


def requantized_blocks(weight: torch.Tensor, qtype: str) -> np.ndarray:
    """Float weights quantized with the gguf package's reference quantizer (llama.cpp's rounding)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if weight.shape[-1] % BLOCK:
        raise GGUFUnsupported(
            f"a layer with {weight.shape[-1]} input columns cannot be written in {qtype}: llama.cpp's "
            f"blocks need a multiple of {BLOCK}"
        )
    out: np.ndarray = quantize(weight.float().numpy(), GGMLQuantizationType[qtype])
    return out


def _qk_row_order(rows: int, n_head: int) -> np.ndarray:
    """llama.cpp's interleaved RoPE row order from Hugging Face's rotate-half order (a permutation)."""
    idx = np.arange(rows).reshape(n_head, 2, rows // n_head // 2)
    return np.ascontiguousarray(idx.swapaxes(1, 2)).reshape(rows)


def _dense(t: torch.Tensor) -> tuple[np.ndarray, Any]:
    """A dense tensor in its stored dtype: (bytes or array, raw gguf type or None)."""
    from gguf import GGMLQuantizationType

    t = t.detach().contiguous()
    if t.dim() == 1 or t.dtype == torch.float32:
        return t.float().numpy(), None
    if t.dtype == torch.float16:
        return t.numpy(), None
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint8).numpy(), GGMLQuantizationType.BF16
    return t.float().numpy(), None


def _rope(cfg: Any) -> tuple[float, str | None]:
    """(rope theta, rope type): transformers 5 keeps both in ``rope_parameters``; older configs use
    ``rope_theta`` and ``rope_scaling``. Reading the wrong one silently writes theta 10000."""
    params = getattr(cfg, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        kind = params.get("rope_type", params.get("type"))
        return float(params["rope_theta"]), None if kind is None else str(kind)
    scaling = getattr(cfg, "rope_scaling", None)
    kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else None
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:
        raise GGUFUnsupported("the config names no RoPE theta (rope_parameters.rope_theta or rope_theta)")
    return float(theta), None if kind is None else str(kind)


def _pre_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    name = str(getattr(tokenizer, "name_or_path", "") or "").lower()
    for needle, pre in KNOWN_PRE_TOKENIZERS:
        if needle in name:
            return pre
    return "default"


def _copy_tokenizer_fields(writer: Any, source: Path) -> None:
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(source))
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = GGUFValueType(field.types[0])
        sub = GGUFValueType(field.types[1]) if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)


def _write_hf_tokenizer(writer: Any, tokenizer: PreTrainedTokenizerBase) -> str:
    """Byte-level BPE from ``tokenizer.json``; returns the pre-tokenizer name written."""
    from gguf import TokenType

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise GGUFUnsupported("the tokenizer has no tokenizer.json (a fast tokenizer is needed for GGUF)")
    spec = json.loads(backend.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise GGUFUnsupported(
            "GGUF export converts byte-level BPE tokenizers only; this one is "
            f"{model.get('type')!r} (use the compressed-tensors export or the Shrinkwise checkpoint)"
        )
    vocab: dict[str, int] = dict(model["vocab"])
    added = {a["content"]: a for a in spec.get("added_tokens", [])}
    for content, a in added.items():
        vocab[content] = int(a["id"])
    size = max(vocab.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [int(TokenType.UNUSED)] * size
    for tok, i in vocab.items():
        tokens[i] = tok
        special = tok in added and added[tok].get("special", False)
        types[i] = int(
            TokenType.CONTROL if special else TokenType.USER_DEFINED if tok in added else TokenType.NORMAL
        )
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    pre = _pre_tokenizer(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    from compressors.text import start_tokens

    for kind in ("bos", "eos", "pad", "unk"):
        tid = getattr(tokenizer, f"{kind}_token_id", None)
        if isinstance(tid, int):
            getattr(writer, f"add_{kind}_token_id")(tid)
    writer.add_add_bos_token(bool(start_tokens(tokenizer)))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)
    return pre


#: general.file_type for a file whose layers llama.cpp's quantizer typed (informational in GGUF)
_MIX_FILE_TYPES: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"Q4_K", "Q6_K"}), "MOSTLY_Q4_K_M"),
    (frozenset({"Q4_K"}), "MOSTLY_Q4_K_S"),
    (frozenset({"Q5_K", "Q6_K"}), "MOSTLY_Q5_K_M"),
    (frozenset({"Q5_K"}), "MOSTLY_Q5_K_S"),
    (frozenset({"Q6_K"}), "MOSTLY_Q6_K"),
    (frozenset({"Q8_0"}), "MOSTLY_Q8_0"),
)


def _plan(
    model: nn.Module, model_type: str, float_type: str | None
) -> tuple[_Plan, dict[str, QuantizedLinear], dict[str, GGUFBlockLinear]]:
    packed = packed_modules(model)
    if not packed and float_type is None:
        raise GGUFUnsupported("the model has no compressed layers to export")
    quantized: dict[str, QuantizedLinear] = {}
    blocks: dict[str, GGUFBlockLinear] = {}
    for path, m in packed.items():
        if isinstance(m, GGUFBlockLinear):
            blocks[path] = m
        elif isinstance(m, QuantizedLinear):
            quantized[path] = m
        else:
            raise GGUFUnsupported(
                f"{path}: packed type {m.packed_type!r} has no GGUF equivalent (GGUF stores quantized "
                "blocks, not sparse layers or per-token int8 activations)"
            )
    arch, permute = _arch(model_type)
    if quantized and blocks:
        raise GGUFUnsupported("the model mixes Shrinkwise codes and llama.cpp blocks; export one kind")
    if blocks:
        kinds = frozenset(m.ggml_type for m in blocks.values())
        label = "+".join(sorted(kinds))
        return _Plan(arch, label, permute), quantized, blocks
    if not quantized:
        return _Plan(arch, str(float_type), permute), quantized, blocks
    qtypes = {_layer_type(m) for m in quantized.values()}
    if len(qtypes) > 1:  # e.g. a mix of symmetric and asymmetric 4-bit: write them all as Q4_1
        qtypes = {"Q4_1"} if qtypes <= {"Q4_0", "Q4_1"} else qtypes
    if len(qtypes) > 1:
        raise GGUFUnsupported(f"layers use {sorted(qtypes)}; this export writes one block type per model")
    return _Plan(arch, next(iter(qtypes)), permute), quantized, blocks


def _file_type(plan: _Plan, float_type: str | None, block_kinds: frozenset[str]) -> str:
    if float_type is not None:
        return {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16"}[float_type]
    if block_kinds:
        for kinds, name in _MIX_FILE_TYPES:
            if block_kinds == kinds:
                return name
        return "MOSTLY_Q4_K_M" if "Q4_K" in block_kinds else "MOSTLY_Q8_0"
    return f"MOSTLY_{plan.qtype_name}"


def export_gguf(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    out_path: str | Path,
    *,
    source_gguf: str | Path | None = None,
    name: str | None = None,
    float_type: str | None = None,
) -> GGUFExport:
    """Write ``model`` (with packed layers) as one GGUF file at ``out_path``.

    Raises :class:`GGUFUnsupported` before writing anything when the model cannot be expressed.
    ``source_gguf``: the GGUF file the model was loaded from, whose tokenizer metadata is copied as is.
    ``float_type``: ``"F32"``, ``"F16"`` or ``"BF16"`` writes the quantized layers dequantized in that
    float type instead (an input for llama.cpp's own quantizer, or a reference to compare kernels with).
    """
    import gguf

    cfg: Any = getattr(model, "config", None)
    if cfg is None:
        raise GGUFUnsupported("the model has no config (a Hugging Face causal LM is needed for GGUF)")
    model_type = str(getattr(cfg, "model_type", ""))
    plan, quantized, block_layers = _plan(model, model_type, float_type)
    rope_theta, rope_type = _rope(cfg)
    if rope_type not in (None, "default"):
        raise GGUFUnsupported(f"RoPE scaling {rope_type!r} is not written by this export")
    if tokenizer is None and source_gguf is None:
        raise GGUFUnsupported("a GGUF file needs the tokenizer; none was given")

    n_layers = int(cfg.num_hidden_layers)
    n_head = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_head)
    hidden = int(cfg.hidden_size)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // n_head)
    arch_enum = gguf.MODEL_ARCH.LLAMA if plan.arch == "llama" else gguf.MODEL_ARCH.QWEN2
    names = gguf.get_tensor_name_map(arch_enum, n_layers)

    qtype = gguf.GGMLQuantizationType[plan.qtype_name] if not (block_layers or float_type) else None
    exact = requant = 0
    reasons: set[str] = set()
    tensors: list[tuple[str, np.ndarray, Any]] = []
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    state = {k: v for k, v in model.state_dict().items()}
    done: set[str] = set()

    def gguf_name(hf_name: str) -> str:
        mapped = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise GGUFUnsupported(f"tensor {hf_name!r} has no GGUF name for arch {plan.arch!r}")
        return str(mapped)

    def row_order(hf_name: str, rows: int) -> np.ndarray | None:
        if not plan.permute_qk:
            return None
        if hf_name.endswith("self_attn.q_proj.weight"):
            return _qk_row_order(rows, n_head)
        if hf_name.endswith("self_attn.k_proj.weight"):
            return _qk_row_order(rows, n_kv)
        return None

    for path, m in quantized.items():
        why = exact_reason(m)
        if float_type is not None:
            data, _ = _dense(m.dequantize().to(_FLOAT_DTYPES[float_type]))
            requant += 1
            reasons.add(f"written dequantized as {float_type}")
            qtype_used: Any = gguf.GGMLQuantizationType[float_type] if float_type == "BF16" else None
            order = row_order(path + ".weight", m.out_features)
            if order is not None:
                data = data[order]
            tensors.append((gguf_name(path + ".weight"), np.ascontiguousarray(data), qtype_used))
            if m.bias is not None:
                bias = m.bias.detach().float()
                if order is not None:
                    bias = bias[torch.from_numpy(order)]
                tensors.append((gguf_name(path + ".bias"), bias.numpy(), None))
            done.update(k for k in state if k.startswith(path + "."))
            continue
        if why is None and _layer_type(m) == plan.qtype_name:
            data = exact_blocks(m, plan.qtype_name)
            exact += 1
        else:
            data = requantized_blocks(m.dequantize(), plan.qtype_name)
            requant += 1
            reasons.add(why or f"mixed zero-point layouts, written as {plan.qtype_name}")
        order = row_order(path + ".weight", m.out_features)
        if order is not None:
            data = data[order]
        tensors.append((gguf_name(path + ".weight"), np.ascontiguousarray(data), qtype))
        if m.bias is not None:
            bias = m.bias.detach().float()
            if order is not None:
                bias = bias[torch.from_numpy(order)]
            tensors.append((gguf_name(path + ".bias"), bias.numpy(), None))
        done.update(k for k in state if k.startswith(path + "."))

    for path, b in block_layers.items():  # llama.cpp's own blocks: written back byte for byte
        data = b.blocks.numpy()
        order = row_order(path + ".weight", b.out_features)
        if order is not None:
            data = data[order]
        tensors.append(
            (gguf_name(path + ".weight"), np.ascontiguousarray(data), gguf.GGMLQuantizationType[b.ggml_type])
        )
        if b.bias is not None:
            bias = b.bias.detach().float()
            if order is not None:
                bias = bias[torch.from_numpy(order)]
            tensors.append((gguf_name(path + ".bias"), bias.numpy(), None))
        done.update(k for k in state if k.startswith(path + "."))
        exact += 1
    linear_names = {n + ".weight" for n, mod in model.named_modules() if isinstance(mod, nn.Linear)}
    for key, t in state.items():
        if key in done or not t.is_floating_point():
            continue
        if key == "lm_head.weight" and tied:
            continue
        order = row_order(key, t.shape[0])
        if float_type is not None and key in linear_names and key != "lm_head.weight":
            data, raw = _dense(t.to(_FLOAT_DTYPES[float_type]))
        else:
            data, raw = _dense(t)
        if order is not None:
            data = data[order]
        tensors.append((gguf_name(key), np.ascontiguousarray(data), raw))

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(str(tmp), plan.arch)
    writer.add_name(name or str(getattr(cfg, "_name_or_path", "") or "shrinkwise-model"))
    kinds = frozenset(m.ggml_type for m in block_layers.values())
    writer.add_file_type(int(getattr(gguf.LlamaFileType, _file_type(plan, float_type, kinds))))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(int(getattr(cfg, "max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(cfg.intermediate_size))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(float(getattr(cfg, "rms_norm_eps", 1e-6)))
    writer.add_vocab_size(int(cfg.vocab_size))
    if source_gguf is not None:
        _copy_tokenizer_fields(writer, Path(source_gguf))
        pre = "copied from the source GGUF"
    else:
        assert_tok = tokenizer
        if assert_tok is None:  # checked above; keeps the type checker informed
            raise GGUFUnsupported("a GGUF file needs the tokenizer; none was given")
        pre = f"pre-tokenizer {_write_hf_tokenizer(writer, assert_tok)!r}"
    for tname, data, raw in tensors:
        writer.add_tensor(tname, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)

    written = float_type or plan.qtype_name
    parts = [f"{exact} of {exact + requant} quantized layers carried over bit for bit as {written}"]
    if plan.qtype_name == "Q4_1" and exact:
        parts[0] += " (codes and scales exact; each block's offset -zero*scale rounded to fp16)"
    if requant:
        parts.append(f"{requant} re-quantized from the dequantized weights ({'; '.join(sorted(reasons))})")
    parts.append("embeddings, norms and output layer carried over in their stored dtype")
    parts.append(f"tokenizer: {pre}")
    note = "; ".join(parts)
    log.info("GGUF export %s: %s", out, note)
    return GGUFExport(out, written, exact, requant, note)
