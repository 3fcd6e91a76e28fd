"""SpQR: GPTQ with small groups, quantized group statistics, and fp16 outliers.

Dettmers et al., "SpQR: A Sparse-Quantized Representation for Near-Lossless LLM Weight
Compression", arXiv 2306.03078. Written from the paper and a reading of the authors' ``spqr_engine.py``.

What it adds to GPTQ (same column loop, Cholesky factor of ``H⁻¹`` and lazy block updates):

1. **Small groups** of ``beta1`` (16) input columns, each with its own scale and zero (asymmetric).
2. **Quantized statistics**: those scales and zeros would cost 2·16/16 = 2 bits per weight in fp16, so
   each is itself quantized to ``qq_bits`` (3) bits, in second-level groups of ``beta2`` (16)
   consecutive output rows sharing one fp16 scale and zero.
3. **Outliers**: a weight whose scaled error ``((w - Q(w)) / [Hinv]_ii)²`` (GPTQ's sensitivity) exceeds
   ``outlier_threshold`` times the layer's mean ``Var(W_:,j) / [Hinv]_jj²`` is kept in fp16 and
   excluded from the grid (about 1% of weights at the paper's 0.2). Before fitting a group's grid,
   weights that would be outliers are detected by a leave-one-out test (how much the group's error
   drops if that weight were not on the grid) and replaced by the group mean, so they do not stretch
   the range.

Average bits per parameter, counted the way the paper's ``main.py`` counts them::

    wbits + (qq_bits + qq_bits) / beta1 + 2·(16 + 16) / (beta1 · beta2) + 32 · outlier_fraction

(3-bit weights, beta1 = beta2 = 16: 3.625 bits before outliers; each outlier costs a 16-bit value and
a 16-bit index.) Permutation indices (act-order) are not counted, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compressors.ops.hessian import inverse_cholesky_upper, prepare_hessian
from compressors.ops.quant_grid import dequantize, maxq_for, quantize, row_params


def spqr_bits_per_param(wbits: int, qq_bits: int, beta1: int, beta2: int, outlier_fraction: float) -> float:
    """The paper's average bits per parameter (see module docstring)."""
    return wbits + (qq_bits + qq_bits) / beta1 + 2 * (16 + 16) / (beta1 * beta2) + 32 * outlier_fraction


@dataclass
class QuantizedStats:
    """A first-level statistic (scales or zeros, ``[rows, n_groups]``) quantized along the rows.

    ``codes`` are ``qq_bits`` integers ``[rows, n_groups]``; ``stats`` is fp16 ``[n_row_groups,
    n_groups, 2]`` holding the second-level (scale, zero) of each ``beta2`` rows; ``values`` is the
    float reconstruction ``scale2 · (code - zero2)`` actually used by the weights.
    """

    codes: torch.Tensor
    stats: torch.Tensor
    values: torch.Tensor


def quantize_stat_column(
    v: torch.Tensor, qq_bits: int, beta2: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Quantize one column of statistics ``v`` ([rows]) in chunks of ``beta2`` rows.

    Returns codes [rows] (uint8), stats fp16 [n_chunks, 2] and the reconstruction [rows] (float32,
    computed from the fp16 stats so storage reproduces it exactly).
    """
    maxq = maxq_for(qq_bits)
    rows = v.shape[0]
    n_chunks = -(-rows // beta2)
    pad = n_chunks * beta2 - rows
    vp = torch.cat([v, v[-1:].expand(pad)]) if pad else v
    chunks = vp.view(n_chunks, beta2).float()
    lo = chunks.min(1).values
    hi = chunks.max(1).values
    s2 = (hi - lo) / maxq
    s2 = torch.where(s2 == 0, torch.ones_like(s2) * torch.clamp(hi.abs(), min=1e-8) / maxq, s2)
    z2 = -lo / s2  # not rounded (SpQR's round_zero=False): costs nothing extra, it is fp16 anyway
    stats = torch.stack([s2, z2], 1).half()
    s2h, z2h = stats[:, 0].float(), stats[:, 1].float()
    codes = torch.clamp(torch.round(chunks / s2h[:, None] + z2h[:, None]), 0, maxq)
    recon = s2h[:, None] * (codes - z2h[:, None])
    return codes.flatten()[:rows].to(torch.uint8), stats, recon.flatten()[:rows]


def _loo_error_reduction(group: torch.Tensor, d: torch.Tensor, bits: int) -> torch.Tensor:
    """For each weight of a group ([rows, g]): how much the group's scaled squared error would drop
    if its grid were fitted without that weight (and that weight were not quantized)."""
    rows, g = group.shape
    maxq = maxq_for(bits)
    if g < 2:
        return torch.zeros_like(group)
    ar = torch.arange(g, device=group.device)
    loo = ar[1:] - (ar[:, None] >= ar[1:]).to(ar.dtype)  # [g, g-1]: all indices but i, in order
    data = group[:, loo]  # [rows, g, g-1]
    flat = data.reshape(rows * g, g - 1)
    s, z = row_params(flat, bits)
    rec = dequantize(quantize(flat, s[:, None], z[:, None], maxq), s[:, None], z[:, None]).view_as(data)
    loo_err = ((rec - data) / d[loo]).square().sum(-1)  # [rows, g]
    s0, z0 = row_params(group, bits)
    rec0 = dequantize(quantize(group, s0[:, None], z0[:, None], maxq), s0[:, None], z0[:, None])
    base_err = ((rec0 - group) / d).square().sum(1, keepdim=True)
    return base_err - loo_err


@dataclass
class SpQRResult:
    """Everything a packed SpQR layer stores, plus the float reconstruction and the bit count.

    ``codes[:, j]`` holds input column ``perm[j]`` (``perm`` None: column ``j``); group of storage
    column ``j`` is ``j // beta1``. Outliers are given in *original* column order as CSR
    (``row_ptr`` int32 [rows+1], ``col_idx`` int64, ``values`` fp16); ``dequantized`` already
    contains them.
    """

    codes: torch.Tensor
    scale: QuantizedStats
    zero: QuantizedStats
    perm: torch.Tensor | None
    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    values: torch.Tensor
    dequantized: torch.Tensor
    bits: int
    beta1: int
    beta2: int
    qq_bits: int
    outlier_fraction: float
    bits_per_param: float
    loss: float


def spqr_quantize(
    W: torch.Tensor,
    H: torch.Tensor,
    bits: int = 3,
    beta1: int = 16,
    beta2: int = 16,
    qq_bits: int = 3,
    outlier_threshold: float = 0.2,
    act_order: bool = True,
    percdamp: float = 0.01,
    blocksize: int = 128,
) -> SpQRResult:
    """SpQR-quantize ``W`` ([out, in]) given the Hessian ``H``; ``outlier_threshold=inf`` disables outliers."""
    maxq = maxq_for(bits)
    W = W.detach().clone().float()
    rows, cols = W.shape
    if blocksize % beta1:
        blocksize = max(beta1, (blocksize // beta1) * beta1)
    H, _dead = prepare_hessian(H.to(W.device), W, percdamp)
    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
    Hinv = inverse_cholesky_upper(H)
    del H
    dHinv = torch.diag(Hinv)

    use_outliers = outlier_threshold != float("inf")
    outlier_scale = (W.var(dim=0) / dHinv.square()).mean().item()
    threshold = outlier_threshold * outlier_scale

    n_groups = -(-cols // beta1)
    s_codes = torch.zeros(rows, n_groups, dtype=torch.uint8)
    z_codes = torch.zeros(rows, n_groups, dtype=torch.uint8)
    n_rg = -(-rows // beta2)
    s_stats = torch.zeros(n_rg, n_groups, 2, dtype=torch.float16)
    z_stats = torch.zeros(n_rg, n_groups, 2, dtype=torch.float16)
    s_vals = torch.zeros(rows, n_groups)
    z_vals = torch.zeros(rows, n_groups)
    Q = torch.zeros(rows, cols)
    Wq = torch.zeros(rows, cols)  # reconstruction in processing order, outliers included
    outlier_mask = torch.zeros(rows, cols, dtype=torch.bool)
    Losses = torch.zeros(rows)
    # replaced at the first group boundary, which column 0 is
    scale = zero = torch.empty(0, device=W.device)

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            col = i1 + i
            if col % beta1 == 0:
                g = col // beta1
                group = W1[:, i : i + beta1]  # blocksize is a multiple of beta1: group inside block
                if use_outliers:
                    red = _loo_error_reduction(group, dHinv[col : col + group.shape[1]], bits)
                    keep = (red <= threshold).float()
                    mean = (group * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp_min(1)
                    fit_on = group * keep + mean * (1 - keep)
                else:
                    fit_on = group
                s, z = row_params(fit_on, bits)
                sc, ss, sv = quantize_stat_column(s, qq_bits, beta2)
                zc, zs, zv = quantize_stat_column(z, qq_bits, beta2)
                sv = sv.clamp_min(1e-10)
                s_codes[:, g], s_stats[:, g], s_vals[:, g] = sc, ss, sv
                z_codes[:, g], z_stats[:, g], z_vals[:, g] = zc, zs, zv
                scale, zero = sv, zv
            w = W1[:, i]
            d = Hinv1[i, i]
            q = quantize(w, scale, zero, maxq)
            wq = dequantize(q, scale, zero)
            if use_outliers:
                err = (w - wq) / d
                is_out = err.square() > threshold
                if is_out.any():
                    outlier_mask[:, col] = is_out
                    wq = torch.where(is_out, w.half().float(), wq)
            Q[:, col] = q
            Wq[:, col] = wq
            err1 = (w - wq) / d
            Losses += err1.square() / 2
            W1[:, i:] -= err1.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    if perm is not None:
        invperm = torch.argsort(perm)
        Wq_orig = Wq[:, invperm]
        mask_orig = outlier_mask[:, invperm]
    else:
        Wq_orig, mask_orig = Wq, outlier_mask
    rr, cc = mask_orig.nonzero(as_tuple=True)  # row-major order: CSR order
    counts = torch.bincount(rr, minlength=rows)
    row_ptr = torch.zeros(rows + 1, dtype=torch.int32)
    row_ptr[1:] = torch.cumsum(counts, 0).to(torch.int32)
    values = Wq_orig[rr, cc].half()
    frac = float(mask_orig.sum()) / mask_orig.numel()
    return SpQRResult(
        codes=Q.to(torch.uint8),
        scale=QuantizedStats(s_codes, s_stats, s_vals),
        zero=QuantizedStats(z_codes, z_stats, z_vals),
        perm=perm,
        row_ptr=row_ptr,
        col_idx=cc,
        values=values,
        dequantized=Wq_orig,
        bits=bits,
        beta1=beta1,
        beta2=beta2,
        qq_bits=qq_bits,
        outlier_fraction=frac,
        bits_per_param=spqr_bits_per_param(bits, qq_bits, beta1, beta2, frac),
        loss=float(Losses.sum()),
    )
