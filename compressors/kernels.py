"""Low-bit matmul kernels for packed layers: the only place Shrinkwise calls torch's weight-only int4/int8 ops.

Packed 4-bit and 8-bit layers (:class:`compressors.packed.QuantizedLinear`) run their forward on torch's
weight-only kernels instead of a dequantized float copy, so a loaded 4-bit model holds about half a
byte per weight and decodes faster than float32 (batch-1 decode reads every weight once per token: it
is memory-bound). These ops are ATen internals, not public API, which is why they live behind this one
module, each with a torch version range and a capability probe:

- int4, CPU: ``aten._convert_weight_to_int4pack_for_cpu`` + ``aten._weight_int4pack_mm_for_cpu`` (the
  ops behind torchao's int4 CPU layout). Weights ``[N, K]`` in ``[0, 16)``; the dequantized weight is
  ``(q - 8) * scale + zero`` per group of ``K`` (``zero`` is a float offset, so Shrinkwise's
  ``(q - z) * s`` maps exactly to ``zero = (8 - z) * s``). Group sizes 32/64/128/256.
- int4, CUDA: ``aten._convert_weight_to_int4pack`` + ``aten._weight_int4pack_mm`` (tinygemm), same
  scale/zero semantics; ``K`` a multiple of 128 (8 inner k-tiles), ``N`` a multiple of 8.
- int8: ``aten._weight_int8pack_mm`` (int8 weight ``[N, K]``, one scale per output row).

Activations go to the kernel in **bfloat16**: it is the only dtype these CPU kernels run fast in (with
float32 activations the int4 CPU kernel takes a scalar reference path, 30x slower than its bf16 path on
an AVX-512 EPYC: measured on [1, 2048] x [2048, 5632], 1 thread: 1.0 ms bf16, 30 ms float32, float32
F.linear 3.3-4.4 ms). Scales and zero offsets are bfloat16 too. So the kernel path is not bit-identical
to ``x @ dequantize().T`` in float32: it differs by bf16 rounding of activations and scales (about
``2**-9`` relative); ``benchmarks/scale.py --inference`` measures the perplexity cost, the tests bound
the per-layer error.

A probe runs each kernel once per device type on tiny random shapes and compares it with the float
reference (and checks that :func:`int4_codes` inverts the CPU packing); a failure, a missing op or a
torch outside :data:`SUPPORTED_TORCH` makes :func:`kernel_available` return ``False``, and the layer falls
back to its documented float path (``SHRINKWISE_LOWBIT_KERNELS=0`` forces that, to compare). Tested with torch 2.13.0 (CPU build).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch
from packaging.specifiers import SpecifierSet
from packaging.version import Version

log = logging.getLogger(__name__)

SUPPORTED_TORCH = ">=2.6,<3"  # the *_for_cpu int4 ops appeared in 2.6
TESTED_TORCH = ("2.13.0",)
INT4_GROUP_SIZES = (256, 128, 64, 32)  # what the int4 kernels accept, largest first
CPU_BLOCK_N = 64  # the CPU int4 packing interleaves output rows in blocks of 64
CUDA_INNER_K_TILES = 8
KERNEL_DTYPE = torch.bfloat16
# Shape rules. The int4 CPU packing raises unless N % 16 == 0; the CPU int8 kernel raises nothing but
# returns wrong numbers when K is not a multiple of 16 (torch 2.13: K = 8, 24, 40, 72, 1000 tried), so
# shapes are checked here, with margin, before any call: real layers are multiples of 64.
INT4_ROW_MULTIPLE = {"cpu": 16, "cuda": 8}
INT8_K_MULTIPLE = 32
INT8_N_MULTIPLE = 16
KERNELS_ENV = "SHRINKWISE_LOWBIT_KERNELS"  # "0": every layer takes its float fallback (for comparisons)

_probed: dict[tuple[str, str], bool] = {}


def torch_supported(version: str | None = None) -> bool:
    """Whether the installed torch is in the range these aten ops are used for."""
    v = Version(version or torch.__version__)
    return Version(v.base_version) in SpecifierSet(SUPPORTED_TORCH)


def _has_ops(*names: str) -> bool:
    return all(hasattr(torch.ops.aten, n) for n in names)


# ---------------------------------------------------------------------------------------------------
# int4


@dataclass
class Int4Weight:
    """A weight packed for the int4 kernel of one device, with everything its forward needs.

    ``perm`` (act-order) permutes the *input* columns before the matmul: the packed weight holds the
    columns in quantization order, where every group is contiguous.
    """

    packed: torch.Tensor
    scales_zeros: torch.Tensor  # [K / group_size, N, 2] bfloat16: (scale, zero offset)
    group_size: int
    out_features: int
    in_features: int
    perm: torch.Tensor | None

    def nbytes(self) -> int:
        ts = [self.packed, self.scales_zeros] + ([self.perm] if self.perm is not None else [])
        return sum(t.numel() * t.element_size() for t in ts)


def int4_group_size(in_features: int, group_size: int, device_type: str) -> int | None:
    """The kernel group size that reproduces ``group_size`` exactly, or ``None`` when none does.

    Any supported size that divides both the layer's group size and ``in_features`` works: each of the
    layer's groups becomes several kernel groups with the same scale (so per-channel, and g128 on a
    576-wide layer whose last group has 64 columns, run as g64)."""
    gs = in_features if group_size == -1 else group_size
    for kgs in INT4_GROUP_SIZES:
        if gs % kgs == 0 and in_features % kgs == 0:
            if device_type == "cuda" and in_features % (CUDA_INNER_K_TILES * 16):
                return None
            return kgs
    return None


def int4_unsupported_reason(
    out_features: int, in_features: int, group_size: int, device_type: str
) -> str | None:
    """Why the int4 kernel cannot run this layer on ``device_type`` (``None``: it can)."""
    if device_type not in ("cpu", "cuda"):
        return f"no int4 kernel for device type {device_type!r}"
    if not kernel_available("int4", device_type):
        return f"the int4 kernel is unavailable on {device_type} with torch {torch.__version__}"
    if int4_group_size(in_features, group_size, device_type) is None:
        return f"group size {group_size} with in_features={in_features} has no int4 kernel group size"
    if out_features % INT4_ROW_MULTIPLE[device_type]:
        return f"out_features={out_features} is not a multiple of {INT4_ROW_MULTIPLE[device_type]}"
    return None


def pack_int4(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    group_size: int,
    perm: torch.Tensor | None = None,
) -> Int4Weight:
    """Pack ``W = (codes - zeros) * scales`` (per group of ``group_size`` columns) for the int4 kernel.

    ``codes`` ``[N, K]`` in ``[0, 16)``; ``scales``/``zeros`` ``[N, n_groups]`` (float); ``perm`` the
    act-order (``perm[j]`` is the j-th column quantized: group ``j // group_size``). The caller checked
    :func:`int4_unsupported_reason` for the codes' device.
    """
    n, k = codes.shape
    dev = codes.device
    kgs = int4_group_size(k, group_size, dev.type)
    if kgs is None:
        raise ValueError(f"no int4 kernel group size for group_size={group_size}, in_features={k}")
    gs = k if group_size == -1 else group_size
    if perm is not None:
        perm = perm.to(device=dev, dtype=torch.long)
        codes = codes[:, perm]
    # kernel group i covers columns [i*kgs, (i+1)*kgs): layer group (i*kgs)//gs
    idx = (torch.arange(k // kgs, device=dev) * kgs) // gs
    s = scales.float()[:, idx]
    zf = (8.0 - zeros.float()[:, idx]) * s
    scales_zeros = torch.stack([s, zf], dim=-1).transpose(0, 1).contiguous().to(KERNEL_DTYPE)
    if dev.type == "cpu":
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1)
    else:
        c = codes.to(torch.uint8)
        packed = torch.ops.aten._convert_weight_to_int4pack(
            ((c[:, ::2] << 4) | c[:, 1::2]).contiguous(), CUDA_INNER_K_TILES
        )
    return Int4Weight(packed, scales_zeros, kgs, n, k, perm)


def int4_mm(x: torch.Tensor, w: Int4Weight) -> torch.Tensor:
    """``x @ W.T`` for ``x`` ``[..., K]``; computed in bfloat16, returned in ``x``'s dtype."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if w.perm is not None:
        x2 = x2.index_select(1, w.perm)
    xb = x2.to(KERNEL_DTYPE).contiguous()
    y: torch.Tensor
    if xb.device.type == "cpu":
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(xb, w.packed, w.group_size, w.scales_zeros)
    else:
        y = torch.ops.aten._weight_int4pack_mm(xb, w.packed, w.group_size, w.scales_zeros)
    return y.to(x.dtype).reshape(*shape[:-1], w.out_features)


def int4_codes(w: Int4Weight) -> torch.Tensor | None:
    """The ``[N, K]`` uint8 codes (in the layer's column order) back from a CPU-packed weight.

    Lets a layer drop its own packed copy once the kernel weight exists and still write the unchanged
    packed state. The CPU packing stores, per block of 64 output rows and per input column, 32 bytes:
    byte ``j`` holds row ``j`` (low nibble) and row ``j + 32`` (high nibble); a last, shorter block
    pairs rows ``2j`` (low) and ``2j + 1`` (high). The probe checks this against the op. ``None`` on CUDA
    (the tinygemm layout is not inverted here; CUDA layers keep their packed codes).
    """
    if w.packed.device.type != "cpu":
        return None
    n, k = w.out_features, w.in_features
    flat = w.packed.reshape(-1)
    out = torch.empty(n, k, dtype=torch.uint8)
    start = 0
    while start < n:
        b = min(CPU_BLOCK_N, n - start)
        if b % 2:
            return None
        blk = flat[start * k // 2 : (start + b) * k // 2].reshape(k, b // 2)
        if b == CPU_BLOCK_N:
            out[start : start + b // 2] = (blk & 0xF).T
            out[start + b // 2 : start + b] = (blk >> 4).T
        else:
            out[start : start + b : 2] = (blk & 0xF).T
            out[start + 1 : start + b : 2] = (blk >> 4).T
        start += b
    if w.perm is not None:
        codes = torch.empty_like(out)
        codes[:, w.perm.cpu()] = out
        return codes
    return out


# ---------------------------------------------------------------------------------------------------
# int8


@dataclass
class Int8Weight:
    """An int8 weight ``[N, K]`` with one scale per row, and the per-row offset of integer zero-points.

    ``W = (q - z) * s`` with ``q`` in ``[0, 256)``: ``W = s * (q - 128) + s * (128 - z)``, so the kernel
    runs on ``q - 128`` and ``offset = s * (128 - z)`` adds ``sum(x) * offset`` (absent when z = 128)."""

    weight: torch.Tensor
    scales: torch.Tensor
    offset: torch.Tensor | None
    out_features: int

    def nbytes(self) -> int:
        ts = [self.weight, self.scales] + ([self.offset] if self.offset is not None else [])
        return sum(t.numel() * t.element_size() for t in ts)


def int8_unsupported_reason(
    out_features: int, in_features: int, group_size: int, device_type: str
) -> str | None:
    """Why the int8 kernel cannot run this layer (``None``: it can). It has one scale per row only."""
    if group_size not in (-1, in_features):
        return f"the int8 kernel has one scale per output row; group size {group_size} needs groups"
    if in_features % INT8_K_MULTIPLE or out_features % INT8_N_MULTIPLE:
        return (
            f"the int8 kernel is used for in_features a multiple of {INT8_K_MULTIPLE} and out_features a "
            f"multiple of {INT8_N_MULTIPLE}; this layer is {out_features}x{in_features}"
        )
    if device_type not in ("cpu", "cuda") or not kernel_available("int8", device_type):
        return f"the int8 kernel is unavailable on {device_type} with torch {torch.__version__}"
    return None


def pack_int8(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> Int8Weight:
    """Pack ``W = (codes - zeros) * scales`` (per row: ``scales``/``zeros`` ``[N]`` or ``[N, 1]``)."""
    s = scales.float().reshape(-1)
    z = zeros.float().reshape(-1)
    q = (codes.to(torch.int16) - 128).to(torch.int8).contiguous()
    off = s * (128.0 - z)
    offset = None if bool((off == 0).all()) else off  # float32: added after the kernel, in float32
    return Int8Weight(q, s.to(KERNEL_DTYPE), offset, codes.shape[0])


def int8_mm(x: torch.Tensor, w: Int8Weight) -> torch.Tensor:
    """``x @ W.T`` in bfloat16, returned in ``x``'s dtype."""
    shape = x.shape
    xb = x.reshape(-1, shape[-1]).to(KERNEL_DTYPE).contiguous()
    y: torch.Tensor = torch.ops.aten._weight_int8pack_mm(xb, w.weight, w.scales)
    if w.offset is not None:
        y = y.float() + xb.float().sum(1, keepdim=True) * w.offset
    return y.to(x.dtype).reshape(*shape[:-1], w.out_features)


def int8_codes(w: Int8Weight) -> torch.Tensor:
    """The uint8 codes back (exact: the kernel weight is ``codes - 128``)."""
    return (w.weight.to(torch.int16) + 128).to(torch.uint8).cpu()


# ---------------------------------------------------------------------------------------------------
# capability probe


def kernel_available(kind: str, device_type: str) -> bool:
    """Whether the ``kind`` ("int4" or "int8") kernel runs correctly on ``device_type`` here (probed once)."""
    if os.environ.get(KERNELS_ENV, "1").strip() == "0":
        return False
    key = (kind, device_type)
    if key not in _probed:
        _probed[key] = _probe(kind, device_type)
    return _probed[key]


def _probe(kind: str, device_type: str) -> bool:
    if not torch_supported():
        log.info("low-bit kernels off: torch %s is outside %s", torch.__version__, SUPPORTED_TORCH)
        return False
    if device_type == "cuda" and not torch.cuda.is_available():
        return False
    ops = {
        ("int4", "cpu"): ("_convert_weight_to_int4pack_for_cpu", "_weight_int4pack_mm_for_cpu"),
        ("int4", "cuda"): ("_convert_weight_to_int4pack", "_weight_int4pack_mm"),
        ("int8", "cpu"): ("_weight_int8pack_mm",),
        ("int8", "cuda"): ("_weight_int8pack_mm",),
    }.get((kind, device_type))
    if ops is None or not _has_ops(*ops):
        return False
    try:
        return _probe_numerics(kind, torch.device(device_type))
    except (RuntimeError, NotImplementedError, ValueError) as exc:  # an op the build lacks a kernel for
        log.info("low-bit %s kernel on %s refused the probe: %s", kind, device_type, exc)
        return False


def _probe_numerics(kind: str, dev: torch.device) -> bool:
    gen = torch.Generator().manual_seed(0)
    n, k, gs = 160, 256, 64  # 160 rows: two full CPU blocks of 64 and a shorter one
    x = torch.randn(3, k, generator=gen)
    if kind == "int4":
        codes = torch.randint(0, 16, (n, k), generator=gen, dtype=torch.uint8)
        scales = torch.rand(n, k // gs, generator=gen) * 0.02 + 0.01
        zeros = torch.randint(0, 16, (n, k // gs), generator=gen).float()
        w4 = pack_int4(codes.to(dev), scales.to(dev), zeros.to(dev), gs)
        y = int4_mm(x.to(dev), w4).float().cpu()
        if dev.type == "cpu":
            back = int4_codes(w4)
            if back is None or not torch.equal(back, codes):
                log.info("low-bit int4 kernel off: the CPU packing layout is not the one int4_codes inverts")
                return False
        ref_w = (codes.float() - zeros.repeat_interleave(gs, 1)) * scales.repeat_interleave(gs, 1)
    else:
        codes = torch.randint(0, 256, (n, k), generator=gen, dtype=torch.uint8)
        scales = torch.rand(n, generator=gen) * 0.002 + 0.001
        zeros = torch.randint(100, 156, (n,), generator=gen).float()
        w8 = pack_int8(codes.to(dev), scales.to(dev), zeros.to(dev))
        y = int8_mm(x.to(dev), w8).float().cpu()
        ref_w = (codes.float() - zeros[:, None]) * scales[:, None]
    ref = x.to(KERNEL_DTYPE).float() @ ref_w.T
    err = float((y - ref).abs().max())
    tol = 0.02 * float(ref.abs().max()) + 1e-3
    ok = math.isfinite(err) and err <= tol
    if not ok:
        log.info("low-bit %s kernel on %s is off: probe error %.3g > %.3g", kind, dev.type, err, tol)
    return ok
