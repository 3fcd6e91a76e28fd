"""SparseGPT: one-shot pruning with OBS weight reconstruction.

Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
arXiv 2301.00774. Same machinery as GPTQ (upper Cholesky factor of ``H⁻¹``, column-by-column error
propagation, lazy block updates) with "quantization" replaced by masking: the mask of each block of
``blocksize`` columns is chosen by the OBS saliency ``w² / [H⁻¹]_jj²`` (adaptive mask selection),
then every pruned weight's error is spread over the remaining columns so ``W X`` is kept.

Unstructured: in each block exactly ``round(sparsity · rows · block_cols)`` weights with the lowest
saliency are pruned (chosen by rank, not a threshold, so ties cannot change the ratio).
N:M: in every ``M`` consecutive input columns of each row, the ``N`` with the lowest saliency are
pruned, the saliency being taken at the moment the group starts (after earlier updates).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compressors.ops.hessian import inverse_cholesky_upper, prepare_hessian


@dataclass
class PruneResult:
    weight: torch.Tensor  # [out, in], zeros where pruned
    mask: torch.Tensor  # bool [out, in], True where a weight was pruned
    loss: float


def sparsegpt_prune(
    W: torch.Tensor,
    H: torch.Tensor,
    sparsity: float = 0.5,
    prune_n: int = 0,
    prune_m: int = 0,
    percdamp: float = 0.01,
    blocksize: int = 128,
) -> PruneResult:
    """Prune ``W`` ([out, in]) at ``sparsity`` (unstructured) or ``prune_n``:``prune_m`` given ``H``."""
    W = W.detach().clone().float()
    rows, cols = W.shape
    H, _dead = prepare_hessian(H.to(W.device), W, percdamp)
    Hinv = inverse_cholesky_upper(H)
    del H
    full_mask = torch.zeros(rows, cols, dtype=torch.bool, device=W.device)
    Losses = torch.zeros(rows, device=W.device)
    nm = prune_n > 0

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        dH = torch.diag(Hinv1)

        if nm:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            sal = W1**2 / dH.unsqueeze(0) ** 2
            k = int(round(sal.numel() * sparsity))
            mask1 = torch.zeros(sal.numel(), dtype=torch.bool, device=W.device)
            if k > 0:
                mask1[torch.topk(sal.flatten(), k, largest=False).indices] = True
            mask1 = mask1.view_as(W1)

        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if nm and i % prune_m == 0:
                m = min(prune_m, count - i)
                if m == prune_m:
                    sal = W1[:, i : i + m] ** 2 / dH[i : i + m].unsqueeze(0) ** 2
                    mask1.scatter_(1, i + torch.topk(sal, prune_n, dim=1, largest=False).indices, True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err1

        W[:, i1:i2] = Q1
        full_mask[:, i1:i2] = mask1
        Losses += Losses1.sum(1) / 2
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    W[full_mask] = 0
    return PruneResult(weight=W, mask=full_mask, loss=float(Losses.sum()))
