"""Export to the compressed-tensors format, the one vLLM (and transformers) load quantized models from.

What it can express (checked against compressed-tensors 0.20's own code, read in the venv):

* ``QuantizedLinear`` -> format ``pack-quantized``: 1-8 bit integer codes packed densely into int32
  along the input dimension (``weight_packed``), per-group or per-channel scales (``weight_scale``),
  asymmetric zero-points packed along the output dimension (``weight_zero_point``), ``weight_shape``.
  3-bit works too (the library packs 32 values into 3 words, as we do).
* ``Int8DynamicLinear`` -> format ``int-quantized``: int8 weights with per-channel scales and
  activations quantized per token at run time (W8A8 dynamic).

What it cannot express, and why (the export is refused with this reason; the Shrinkwise packed
checkpoint remains the complete result):

* a group size that does not divide a layer's input width (SmolLM2's 576 with g=128): the library's
  group strategy raises "tensor column shape must be divisble by the given group_size";
* act-order (a column permutation with groups in permuted order): this version stores no ``g_idx``;
* non-integer zero-points or sub-8-bit quantized scales (SpQR's 3-bit statistics and its fp16
  outliers in CSR): there is no field for second-level statistics or sparse outliers;
* sparse layers (unstructured bitmask, 2:4): compressed-tensors 0.20 keeps only the *configs* of its
  legacy ``sparse-bitmask``/``sparse-24-bitmask`` formats; their compressors are gone, so such a file
  could not be read back with the library (and its sparse models are written dense by llm-compressor).
* a model mixing several schemes is written only if all quantized layers share one scheme.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compressors.base import CompressionError
from compressors.packed import PackedModule, QuantizedLinear, packed_modules

if TYPE_CHECKING:  # transformers is imported lazily (it costs seconds); only its types are needed here
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: ("pack-quantized" | "int-quantized", bits, strategy, group size, symmetric): layers sharing one scheme
SchemeKey = tuple[str, int, str, int | None, bool]

log = logging.getLogger(__name__)


class ExportUnsupported(CompressionError):
    """The result cannot be expressed in compressed-tensors; the message says which layer and why."""


def _quant_args(m: QuantizedLinear) -> dict[str, Any]:
    offset = 1 << (m.bits - 1)
    symmetric = m.zero_const is not None and m.zero_const == offset
    return {
        "num_bits": m.bits,
        "type": "int",
        "symmetric": symmetric,
        "strategy": "channel" if m.group_size == -1 else "group",
        "group_size": None if m.group_size == -1 else m.group_size,
        "dynamic": False,
        "observer": "minmax",
    }


def nearest_dividing_group_sizes(group_size: int, widths: list[int], n: int = 2) -> list[int]:
    """The ``n`` group sizes closest to ``group_size`` (powers of two and multiples of 32 first) that
    divide every width in ``widths``; e.g. 128 for SmolLM2's 576 and 1536 -> [64, 192]."""
    common = min(widths)
    divisors = [d for d in range(8, common + 1) if all(w % d == 0 for w in widths)]
    divisors.sort(key=lambda d: (abs(d - group_size), d % 32 != 0, d))
    return divisors[:n] or [-1]


def _check_expressible(path: str, m: PackedModule) -> None:
    if isinstance(m, QuantizedLinear):
        if m.group_size != -1 and m.in_features % m.group_size:
            near = nearest_dividing_group_sizes(m.group_size, [m.in_features])
            raise ExportUnsupported(
                f"{path}: group_size {m.group_size} does not divide in_features {m.in_features}; "
                "compressed-tensors' group strategy requires whole groups (use a group size that divides "
                f"{m.in_features}: {' or '.join(map(str, near))}, or per-channel -1)"
            )
        if m.perm is not None:
            raise ExportUnsupported(
                f"{path}: act-order column permutation (g_idx) is not stored by compressed-tensors 0.20"
            )
        if m.zero_const is None and m.zero_bits is None:
            raise ExportUnsupported(f"{path}: non-integer zero-points cannot be stored in compressed-tensors")
        return
    if m.packed_type == "int8_dynamic_linear":
        return
    raise ExportUnsupported(
        f"{path}: packed type {m.packed_type!r} has no compressed-tensors equivalent "
        "(see docs/formats.md: SpQR outliers/3-bit statistics and sparse layers cannot be expressed)"
    )


def _scheme_key(m: PackedModule) -> SchemeKey:
    if isinstance(m, QuantizedLinear):
        a = _quant_args(m)
        return ("pack-quantized", a["num_bits"], a["strategy"], a["group_size"], a["symmetric"])
    return ("int-quantized", 8, "channel", None, True)


def export_compressed_tensors(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    out_dir: str | Path,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``model`` (with packed layers) as a compressed-tensors checkpoint in ``out_dir``.

    Raises :class:`ExportUnsupported` (before writing anything) when some layer cannot be expressed.
    ``dtype``: dtype of scales and dense tensors (default: the model's, float32 for the demo), so the
    decompressed weights equal Shrinkwise's dequantized weights exactly.
    """
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme
    from safetensors.torch import save_file

    packed = packed_modules(model)
    if not packed:
        raise ExportUnsupported("the model has no compressed layers to export")
    for path, m in packed.items():
        _check_expressible(path, m)
    keys = {_scheme_key(m) for m in packed.values()}
    if len(keys) > 1:
        raise ExportUnsupported(
            f"layers use {len(keys)} different schemes {sorted(map(str, keys))}; "
            "this export writes one scheme per model"
        )
    fmt = next(iter(keys))[0]
    dt = dtype or next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)

    tensors: dict[str, torch.Tensor] = {}
    # one scheme for all layers (checked above): the quantized layers' arguments are the first one's
    first_quantized = next((m for m in packed.values() if isinstance(m, QuantizedLinear)), None)
    for path, m in packed.items():
        if isinstance(m, QuantizedLinear):
            offset = 1 << (m.bits - 1)
            q = (m.codes().to(torch.int16) - offset).to(torch.int8)
            tensors[f"{path}.weight_packed"] = pack_to_int32(q, m.bits)
            tensors[f"{path}.weight_scale"] = m.scales.to(dt).contiguous()
            tensors[f"{path}.weight_shape"] = torch.tensor([m.out_features, m.in_features])
            if not _quant_args(m)["symmetric"]:
                z = (m.zero_points().round().to(torch.int16) - offset).to(torch.int8)
                tensors[f"{path}.weight_zero_point"] = pack_to_int32(z, m.bits, packed_dim=0).contiguous()
        else:  # Int8DynamicLinear: its packed state is the int8 weight and the per-row scales
            state = m.packed_state()
            tensors[f"{path}.weight"] = state["qweight"].contiguous()
            tensors[f"{path}.weight_scale"] = state["scales"].to(dt)[:, None].contiguous()
        b = getattr(m, "bias", None)
        if b is not None:
            tensors[f"{path}.bias"] = b.to(dt).contiguous()

    inside = tuple(p + "." for p in packed)
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if name.startswith(inside) or id(p) in seen:
            continue
        seen.add(id(p))
        tensors[name] = p.detach().to(dt if p.is_floating_point() else p.dtype).contiguous()

    if first_quantized is not None:  # fmt == "pack-quantized"
        weights = _quant_args(first_quantized)
        scheme = {
            "targets": ["Linear"],
            "weights": weights,
            "input_activations": None,
            "output_activations": None,
        }
    else:
        scheme = {
            "targets": ["Linear"],
            "weights": {
                "num_bits": 8,
                "type": "int",
                "symmetric": True,
                "strategy": "channel",
                "dynamic": False,
            },
            "input_activations": {
                "num_bits": 8,
                "type": "int",
                "symmetric": True,
                "strategy": "token",
                "dynamic": True,
            },
            "output_activations": None,
        }
    quantized = set(packed)
    ignore = [
        name for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and name not in quantized
    ]
    qconfig = QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(**scheme)},
        format=fmt,
        quantization_status="compressed",
        ignore=ignore,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config.to_dict()
    if not cfg.get("architectures"):  # vLLM refuses a config without it (a GGUF source names no class)
        cfg["architectures"] = [type(model).__name__]
    cfg["quantization_config"] = qconfig.model_dump(exclude_none=False, mode="json")
    if first_quantized is not None and not _quant_args(first_quantized)["symmetric"]:
        # transformers' compressed-tensors loader builds zero-points as [out, groups] while the format
        # packs them along the output dimension ([out / (32 / bits), groups], what vLLM reads), so its
        # compressed path refuses them with a size mismatch. This key is read by transformers only
        # (vLLM ignores keys it does not know): it decompresses at load, so the folder loads with a plain
        # from_pretrained, in float (disk saved, RAM not, in transformers; vLLM runs it packed).
        cfg["quantization_config"]["dequantize"] = True
    cfg["dtype"] = str(dt).replace("torch.", "")
    cfg.pop("torch_dtype", None)
    import json

    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=str))
    if getattr(model, "generation_config", None) is not None:
        try:
            model.generation_config.save_pretrained(out)
        except Exception as exc:  # pragma: no cover
            log.warning("generation_config not exported: %s", exc)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    from compressors.storage import drop_code_files

    drop_code_files(out)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
