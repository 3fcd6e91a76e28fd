"""Which exports a run's settings allow, said *before* the run: the rules in one place.

A run always leaves the Shrinkwise packed checkpoint. Its exports depend on the settings:

* **compressed-tensors** (vLLM, transformers; :mod:`compressors.export`) stores whole groups only, so
  a group size must divide the input width of every quantized layer (SmolLM2-135M: 576 and 1536, so
  g=128 is refused and g=64 works), and it stores no act-order permutation (GPTQ's act-order with
  per-group grids and without static groups). SpQR's outliers and the sparse layouts have no field
  there at all. These are *blockers*: the export is refused after the run.
* **GGUF** (llama.cpp): its Q4_0 / Q4_1 / Q8_0 blocks hold 32 weights with one scale each, so 4- and
  8-bit codes are carried over bit for bit only when every group is made of whole 32-weight blocks
  (a group size that is a multiple of 32, or one grid per output channel) and no column permutation
  is stored; otherwise the GGUF is re-quantized from the dequantized weights. That is a *note*: the
  export is still written.

:func:`check_exports` is what the Compress page, :mod:`jobs.preflight` and ``shrinkwise compress``
call; :func:`export_blockers` is its list of blockers. When a group size blocks the export,
:func:`nearest_group_size` proposes the nearest one that divides every width (preferring the sizes
the serving kernels are built for), and the page offers it as one click.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Compressors whose layers are QuantizedLinear (integer codes, per-group or per-channel grids).
GROUPED_QUANTIZERS = frozenset({"rtn", "gptq"})
#: Compressors whose result compressed-tensors cannot hold, with the reason (compressors/export.py).
NO_COMPRESSED_TENSORS = {
    "spqr": "SpQR's 3-bit group statistics and fp16 outliers have no field in compressed-tensors",
    "magnitude": "compressed-tensors keeps no readable sparse format (its bitmask compressors are gone)",
    "wanda": "compressed-tensors keeps no readable sparse format (its bitmask compressors are gone)",
    "sparsegpt": "compressed-tensors keeps no readable sparse format (its bitmask compressors are gone)",
}
#: Group sizes the serving kernels are built for (vLLM's Marlin takes 32, 64 and 128; llama.cpp's
#: blocks are 32 wide): a proposed group size is one of these when one divides every width.
ENGINE_GROUP_SIZES = (32, 64, 128)
MIN_GROUP_SIZE = 8  # compressors.methods.layerwise.check_group_size
#: llama.cpp's Q4_0 / Q4_1 / Q8_0 blocks: 32 weights sharing one scale (and a minimum for Q4_1).
GGUF_BLOCK = 32
GGUF_BITS = (4, 8)
#: Whether compressors/export.py writes act-order (a g_idx). Flip it together with the exporter.
COMPRESSED_TENSORS_ACT_ORDER = False


@dataclass(frozen=True)
class ExportCheck:
    """What the settings allow: ``blockers`` (the compressed-tensors export would be refused, and why),
    ``notes`` (what is lost or re-quantized in an export that is still written) and ``fixes``: settings
    that remove a blocker, as ``{setting: value}`` with a button label (e.g. ``"use g=64"``)."""

    blockers: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fixes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def quantized_widths(shape: Any) -> list[int]:
    """The input widths of a model's quantized layers (a Llama-style block: every projection reads
    ``hidden_size`` except ``down_proj``, which reads ``intermediate_size``), from its ModelShape.

    A model whose attention is wider than ``hidden_size`` (Gemma: heads × head_dim) has one more width,
    ``o_proj``'s, which the shape does not carry; the exporter still refuses it after the run."""
    from compressors.methods.layerwise import block_layer_shapes

    return sorted({d for _, d in block_layer_shapes(shape)})


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


def nearest_group_size(group_size: int, widths: Iterable[int]) -> int:
    """The group size nearest ``group_size`` that divides every width: one the kernels are built for
    (:data:`ENGINE_GROUP_SIZES`) when one divides them all, else any divisor of at least
    :data:`MIN_GROUP_SIZE` (ties: the smaller, finer group), else -1 (one grid per output channel)."""
    ws = [w for w in widths if w > 0]
    if not ws:
        return group_size
    common = math.gcd(*ws)
    fits = [d for d in _divisors(common) if d >= MIN_GROUP_SIZE]
    preferred = [d for d in fits if d in ENGINE_GROUP_SIZES]
    pool = preferred or fits
    if not pool:
        return -1
    return min(pool, key=lambda d: (abs(d - group_size), d))


def _int(config: Mapping[str, Any], name: str, default: int) -> int:
    value = config.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _with_defaults(compressor: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings as the run will use them: the compressor's defaults under the given ones (a form or
    a CLI names only what it changes; GPTQ's act-order, for one, defaults to static groups)."""
    import dataclasses

    from compressors.base import CompressorId, get_compressor

    try:
        cls = get_compressor(CompressorId(compressor)).config_cls
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    except (KeyError, TypeError):
        return dict(config)
    return {**{k: v for k, v in defaults.items() if v is not dataclasses.MISSING}, **dict(config)}


def check_exports(widths: Sequence[int], compressor: str, config: Mapping[str, Any]) -> ExportCheck:
    """The exports the settings ``config`` of ``compressor`` allow on a model whose quantized layers read
    ``widths`` inputs (see the module docstring for the rules)."""
    check = ExportCheck()
    if compressor in NO_COMPRESSED_TENSORS:
        check.blockers.append(
            f"No compressed-tensors export (vLLM, transformers) for this method: "
            f"{NO_COMPRESSED_TENSORS[compressor]}. The Shrinkwise packed checkpoint is the result."
        )
        return check
    if compressor not in GROUPED_QUANTIZERS:
        return check
    config = _with_defaults(compressor, config)
    g = _int(config, "group_size", -1)
    bits = _int(config, "bits", 4)
    permuted = bool(config.get("act_order")) and not bool(config.get("static_groups")) and g != -1
    ragged = sorted(w for w in widths if g != -1 and w % g)
    if ragged:
        proposal = nearest_group_size(g, widths)
        fix = f"g={proposal}" if proposal != -1 else "one grid per output channel (g=-1)"
        check.blockers.append(
            f"Group size {g} does not divide the input width{'s' if len(ragged) > 1 else ''} "
            f"{', '.join(map(str, ragged))} of this model's quantized layers, so the compressed-tensors export (vLLM, "
            f"transformers) would be refused: it stores whole groups only. Use {fix}, the nearest size "
            "that divides every width, or keep g="
            f"{g} and get only the Shrinkwise packed checkpoint and the GGUF."
        )
        check.fixes.append((f"Use g={proposal}", {"group_size": proposal}))
    if permuted and not COMPRESSED_TENSORS_ACT_ORDER:
        check.blockers.append(
            "Act-order with per-group grids stores a column permutation, which the compressed-tensors "
            "export cannot write yet (no g_idx), so it would be refused. Turn on static groups (act-order "
            "still orders the columns; the groups stay in column order, slightly worse) or turn act-order off."
        )
        check.fixes.append(("Use static groups", {"static_groups": True}))
    gguf_exact = bits in GGUF_BITS and (g == -1 or g % GGUF_BLOCK == 0) and not permuted
    if not gguf_exact:
        why = []
        if bits not in GGUF_BITS:
            why.append(f"{bits}-bit codes have no llama.cpp block type with the same grid")
        if g != -1 and g % GGUF_BLOCK:
            why.append(f"groups of {g} are not whole {GGUF_BLOCK}-weight blocks")
        if permuted:
            why.append("act-order's column permutation cannot be stored")
        check.notes.append(
            "GGUF (llama.cpp): re-quantized from the dequantized weights, not carried over bit for bit ("
            + "; ".join(why)
            + f"). Codes are kept exactly with 4 or 8 bits, a group size that is a multiple of {GGUF_BLOCK} "
            "(or per-channel) and no act-order permutation."
        )
    return check


def export_blockers(widths: Sequence[int], compressor: str, config: Mapping[str, Any]) -> list[str]:
    """Why the compressed-tensors export of a run with these settings would be refused (empty: it will
    be written)."""
    return check_exports(widths, compressor, config).blockers
