"""Uniform quantization grids: scale and zero point per row or per group, quantize, dequantize.

Conventions follow GPTQ's ``quant.py`` (Frantar et al., arXiv 2210.17323): integer codes live in
``[0, 2**bits - 1]`` and a weight is reconstructed as ``scale * (q - zero)``. Asymmetric grids fit
``[min, max]`` of the row (or group) with a rounded zero point; symmetric grids fit ``[-a, a]`` with
``a = max|w|`` and a fixed zero of ``(2**bits) / 2`` (the middle code), so they store no zero at all.

Groups run along the input dimension (columns of a ``[out, in]`` weight). A group size that does not
divide the width leaves a shorter last group: SmolLM2's 576-wide layers with group 128 give groups of
128, 128, 128, 128 and 64. Some peer tools refuse such layers; nothing here needs divisibility.

The optional MSE search (``mse=True``) shrinks the range step by step and keeps, per row, the clip
that minimises ``|w - Q(w)|^p`` (p = 2.4, GPTQ's choice): it helps at 2-3 bits, where min/max ranges
waste codes on single extreme weights.
"""

from __future__ import annotations

import math

import torch

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8)


def maxq_for(bits: int) -> int:
    """Largest integer code for ``bits`` (codes run from 0 to this)."""
    if bits not in ALLOWED_BITS:
        raise ValueError(f"bits={bits!r} is not supported; choose one of {list(ALLOWED_BITS)}")
    return (1 << bits) - 1  # 2**bits - 1 (typed int, where int ** int is typed Any)


def n_groups_for(width: int, group_size: int) -> int:
    """Number of groups along a row of ``width`` columns (``group_size=-1``: one group per row)."""
    if group_size == -1 or group_size >= width:
        return 1
    return math.ceil(width / group_size)


def _params_from_range(
    xmin: torch.Tensor, xmax: torch.Tensor, maxq: int, sym: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    xmin = torch.minimum(xmin, torch.zeros_like(xmin))
    xmax = torch.maximum(xmax, torch.zeros_like(xmax))
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = -xmax
    # an all-zero row would give scale 0 and a division by zero; give it a harmless unit range
    flat = (xmin == 0) & (xmax == 0)
    xmin = torch.where(flat, -torch.ones_like(xmin), xmin)
    xmax = torch.where(flat, torch.ones_like(xmax), xmax)
    scale = (xmax - xmin) / maxq
    if sym:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.round(-xmin / scale)
    return scale, zero


def row_params(
    w: torch.Tensor,
    bits: int,
    sym: bool = False,
    mse: bool = False,
    maxshrink: float = 0.8,
    grid: int = 100,
    norm: float = 2.4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero for each row of ``w`` ([rows, cols]) over all its columns; both of shape [rows]."""
    maxq = maxq_for(bits)
    w = w.float()
    xmin = w.min(dim=1).values
    xmax = w.max(dim=1).values
    scale, zero = _params_from_range(xmin, xmax, maxq, sym)
    if not mse:
        return scale, zero
    best = torch.full_like(scale, float("inf"))
    for i in range(int(maxshrink * grid)):
        p = 1 - i / grid
        s1, z1 = _params_from_range(p * xmin, p * xmax, maxq, sym)
        err = (
            (dequantize(quantize(w, s1[:, None], z1[:, None], maxq), s1[:, None], z1[:, None]) - w)
            .abs()
            .pow(norm)
            .sum(1)
        )
        better = err < best
        if better.any():
            best = torch.where(better, err, best)
            scale = torch.where(better, s1, scale)
            zero = torch.where(better, z1, zero)
    return scale, zero


def group_params(
    w: torch.Tensor, bits: int, group_size: int, sym: bool = False, mse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero per row and group: both ``[rows, n_groups]``; the last group may be shorter."""
    rows, cols = w.shape
    n = n_groups_for(cols, group_size)
    gs = cols if n == 1 else group_size
    scales, zeros = [], []
    for g in range(n):
        s, z = row_params(w[:, g * gs : (g + 1) * gs], bits, sym=sym, mse=mse)
        scales.append(s)
        zeros.append(z)
    return torch.stack(scales, 1), torch.stack(zeros, 1)


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    """Integer codes (as float) of ``w`` on the grid; ``scale``/``zero`` broadcast against ``w``."""
    # round after adding the zero: equal to round(w/scale) + zero for integer zeros, and still an
    # integer code for the fractional zeros SpQR reconstructs from its 3-bit statistics
    return torch.clamp(torch.round(w / scale + zero), 0, maxq)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    return scale * (q - zero)


def expand_groups(t: torch.Tensor, cols: int, group_size: int) -> torch.Tensor:
    """Repeat per-group values ``[rows, n_groups]`` to per-column ``[rows, cols]``."""
    if t.shape[1] == 1:
        return t.expand(-1, cols)
    idx = torch.arange(cols, device=t.device) // group_size
    return t[:, idx]


def quantize_rtn(
    w: torch.Tensor, bits: int, group_size: int = -1, sym: bool = False, mse: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Round-to-nearest: integer codes ``[rows, cols]`` (uint8), scale and zero ``[rows, n_groups]``."""
    maxq = maxq_for(bits)
    w = w.float()
    scale, zero = group_params(w, bits, group_size, sym=sym, mse=mse)
    cols = w.shape[1]
    gs = cols if scale.shape[1] == 1 else group_size
    q = quantize(w, expand_groups(scale, cols, gs), expand_groups(zero, cols, gs), maxq)
    return q.to(torch.uint8), scale, zero


def dequantize_groups(
    q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int
) -> torch.Tensor:
    """Float weight ``[rows, cols]`` from codes and per-group scale/zero."""
    cols = q.shape[1]
    gs = cols if scale.shape[1] == 1 else group_size
    return dequantize(q.float(), expand_groups(scale, cols, gs), expand_groups(zero, cols, gs))
