"""Wanda: pruning by weight magnitude times input activation norm, no weight update.

Sun, Liu, Bair, Kolter, "A Simple and Effective Pruning Approach for Large Language Models",
arXiv 2306.11695. The score of weight ``W_ij`` is ``|W_ij| · ‖X_j‖₂``: a small weight on an input
that carries large activations (LLMs have a few such outlier features) still matters. Weights are
compared *per output row* (each row loses the same fraction), which the paper found better than
per layer for LLMs. N:M keeps the ``M - N`` highest scores in every ``M`` consecutive inputs.
"""

from __future__ import annotations

import torch

from compressors.ops.magnitude import mask_lowest_nm, mask_lowest_per_row


def wanda_scores(W: torch.Tensor, sq_norms: torch.Tensor) -> torch.Tensor:
    """``|W| · ‖X_j‖``: ``sq_norms`` is the per-input mean of ``x_j²`` (any positive scale works)."""
    return W.abs().float() * torch.sqrt(sq_norms.float().clamp_min(0)).unsqueeze(0)


def wanda_mask(
    W: torch.Tensor, sq_norms: torch.Tensor, sparsity: float = 0.5, prune_n: int = 0, prune_m: int = 0
) -> torch.Tensor:
    """Bool mask ``[out, in]``, True where a weight is pruned."""
    s = wanda_scores(W, sq_norms)
    if prune_n:
        return mask_lowest_nm(s, prune_n, prune_m)
    return mask_lowest_per_row(s, sparsity)
