"""Magnitude pruning: drop the weights with the smallest absolute value, no data, no update.

The classic baseline (Han et al., 2015; per layer as in the SparseGPT and Wanda papers' baselines).
It ignores which inputs are active, which is why it collapses on LLMs at 50% (evidence.md: LLaMA-7B
Wiki2 5.68 → 17.29) while SparseGPT and Wanda stay close to dense. Also holds the mask helpers Wanda
shares: lowest fraction per layer, per row, and N:M.
"""

from __future__ import annotations

import torch


def mask_lowest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True on exactly ``round(sparsity · numel)`` lowest scores of the whole tensor."""
    k = int(round(scores.numel() * sparsity))
    mask = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        mask[torch.topk(scores.flatten(), k, largest=False).indices] = True
    return mask.view_as(scores)


def mask_lowest_per_row(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True on the ``round(sparsity · cols)`` lowest scores of each row."""
    k = int(round(scores.shape[1] * sparsity))
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, torch.topk(scores, k, dim=1, largest=False).indices, True)
    return mask


def mask_lowest_nm(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True on the ``n`` lowest of every ``m`` consecutive columns (a trailing partial group is kept dense)."""
    rows, cols = scores.shape
    full = (cols // m) * m
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if full:
        s = scores[:, :full].reshape(rows, full // m, m)
        idx = torch.topk(s, n, dim=2, largest=False).indices
        sub = torch.zeros_like(s, dtype=torch.bool).scatter_(2, idx, True)
        mask[:, :full] = sub.reshape(rows, full)
    return mask


def magnitude_mask(
    W: torch.Tensor, sparsity: float = 0.5, prune_n: int = 0, prune_m: int = 0
) -> torch.Tensor:
    """Bool mask ``[out, in]`` of the weights magnitude pruning removes from one layer."""
    s = W.abs().float()
    if prune_n:
        return mask_lowest_nm(s, prune_n, prune_m)
    return mask_lowest(s, sparsity)
