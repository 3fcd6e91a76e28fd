"""GPTQ: one-shot weight quantization with second-order error compensation.

Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", arXiv 2210.17323. Written from the paper and a reading of the authors'
``gptq.py`` (IST-DASLab/gptq); symbols follow the paper: ``W`` the ``[out, in]`` weight, ``H`` the
Hessian ``2XXᵀ``, ``Hinv`` the upper Cholesky factor of its inverse, ``Q`` the quantized weight,
``Err`` the scaled errors of one block.

Columns are quantized one at a time; after each, the not-yet-quantized columns absorb the error
through the OBS update ``W[:, j:] -= err · Hinv[i, j:]``. Updates are applied lazily: inside a block
of ``blocksize`` columns immediately, to the rest of the matrix once per block (one matmul), which
is what makes it fast. Options, as in the reference code:

* ``act_order``: process columns in order of decreasing ``H_jj`` (most active inputs first), which
  matters at 3 bits. With groups this changes which columns share a group:
  - ``static_groups=False``: groups are consecutive *in processing order*; codes are returned in that
    order with ``perm`` (storage column ``j`` holds input ``perm[j]``) so a packed layer permutes its
    input once (``x[:, perm]``) and keeps contiguous groups.
  - ``static_groups=True``: group parameters are fixed up front from the original weight in the
    original column order, so codes need no permutation (vLLM-friendly), at a small accuracy cost.
* groups: scale and zero are recomputed at each group boundary from the *current* (already error-
  compensated) weights of the group, which is where GPTQ's grouping gains over RTN's.
* dead inputs (``H_jj = 0``) get zero weight; ``percdamp`` dampens ``H`` before the Cholesky.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compressors.ops.hessian import inverse_cholesky_upper, prepare_hessian
from compressors.ops.quant_grid import dequantize, maxq_for, n_groups_for, quantize, row_params


@dataclass
class QuantResult:
    """Integer codes and their grid for one ``[out, in]`` layer.

    ``codes[:, j]`` quantizes input column ``perm[j]`` when ``perm`` is set (else column ``j``); the
    group of storage column ``j`` is ``j // group_size``. ``dequantized`` is the float weight in the
    layer's original column order (what the packed layer computes). ``loss`` is GPTQ's summed
    ``(w - q)² / [Hinv]_ii²`` / 2, comparable across runs on the same Hessian.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    group_size: int
    sym: bool
    perm: torch.Tensor | None
    dequantized: torch.Tensor
    loss: float


def _static_group_params(
    W: torch.Tensor, bits: int, group_size: int, sym: bool, mse: bool
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    cols = W.shape[1]
    out = []
    for g in range(n_groups_for(cols, group_size)):
        out.append(row_params(W[:, g * group_size : (g + 1) * group_size], bits, sym=sym, mse=mse))
    return out


def gptq_quantize(
    W: torch.Tensor,
    H: torch.Tensor,
    bits: int = 4,
    group_size: int = -1,
    sym: bool = False,
    act_order: bool = False,
    static_groups: bool = False,
    percdamp: float = 0.01,
    blocksize: int = 128,
    mse: bool = False,
) -> QuantResult:
    """Quantize ``W`` ([out, in]) given the Hessian ``H`` ([in, in]) of its inputs.

    Example::

        >>> W = torch.randn(8, 32); X = torch.randn(256, 32)
        >>> r = gptq_quantize(W, 2 * X.T @ X / 256, bits=4, group_size=16)
        >>> r.codes.shape, r.scale.shape
        (torch.Size([8, 32]), torch.Size([8, 2]))
    """
    maxq = maxq_for(bits)
    W = W.detach().clone().float()
    rows, cols = W.shape
    gs = group_size if (group_size != -1 and group_size < cols) else -1
    H, _dead = prepare_hessian(H.to(W.device), W, percdamp)

    static = None
    if gs != -1 and static_groups:
        static = _static_group_params(W, bits, gs, sym, mse)

    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]

    Hinv = inverse_cholesky_upper(H)
    del H

    Q = torch.zeros_like(W)
    Losses = torch.zeros(rows, device=W.device)
    n_groups = n_groups_for(cols, gs)
    scales = torch.zeros(rows, n_groups, device=W.device)
    zeros = torch.zeros(rows, n_groups, device=W.device)
    # with static groups and act-order, a column's group depends on its original index
    col_scale = torch.zeros(rows, cols, device=W.device) if static is not None else None
    col_zero = torch.zeros(rows, cols, device=W.device) if static is not None else None

    if gs == -1:
        scale, zero = row_params(W, bits, sym=sym, mse=mse)
        scale, zero = scale[:, None], zero[:, None]
        scales[:, 0:1], zeros[:, 0:1] = scale, zero
    else:
        # replaced at the first group boundary, which column 0 is
        scale = zero = torch.empty(0, device=W.device)
    if static is not None:
        for g, (s, z) in enumerate(static):
            scales[:, g], zeros[:, g] = s, z

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]

        for i in range(count):
            col = i1 + i
            w = W1[:, i]
            d = Hinv1[i, i]
            if gs != -1:
                if static is not None:
                    orig = int(perm[col].item()) if perm is not None else col
                    s, z = static[orig // gs]
                    scale, zero = s[:, None], z[:, None]
                elif col % gs == 0:
                    # the group's current weights: updated ones inside this block, lazily
                    # updated ones beyond it (as in the reference implementation)
                    group = torch.cat([W1[:, i : i + gs], W[:, i2 : i2 + gs]], dim=1)[:, :gs]
                    s, z = row_params(group, bits, sym=sym, mse=mse)
                    scale, zero = s[:, None], z[:, None]
                    scales[:, col // gs], zeros[:, col // gs] = s, z
            q = quantize(w.unsqueeze(1), scale, zero, maxq)
            Q1[:, i] = q.squeeze(1)
            wq = dequantize(q, scale, zero).squeeze(1)
            Losses1[:, i] = (w - wq) ** 2 / d**2
            err1 = (w - wq) / d
            W1[:, i:] -= err1.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err1
            if col_scale is not None and col_zero is not None:
                col_scale[:, col], col_zero[:, col] = scale.squeeze(1), zero.squeeze(1)

        Q[:, i1:i2] = Q1
        Losses += Losses1.sum(1) / 2
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    codes = Q.to(torch.uint8)
    if col_scale is not None and col_zero is not None:
        deq = dequantize(Q, col_scale, col_zero)
    else:
        gsz = cols if gs == -1 else gs
        idx = torch.arange(cols, device=W.device) // gsz
        deq = dequantize(Q, scales[:, idx], zeros[:, idx])
    out_perm = perm
    if perm is not None:
        invperm = torch.argsort(perm)
        deq = deq[:, invperm]
        if static is not None or gs == -1:
            # groups are in original column order (or there is one group per row): store codes in
            # that order, no permutation needed
            codes = codes[:, invperm]
            out_perm = None
    return QuantResult(
        codes=codes,
        scale=scales,
        zero=zeros,
        bits=bits,
        group_size=gs,
        sym=sym,
        perm=out_perm,
        dequantized=deq,
        loss=float(Losses.sum()),
    )
