"""Distillation losses, and the *selective* token weighting of selective-intervention distillation.

Per-token KL: for every position ``t`` the teacher's and the student's next-token distributions at
temperature ``T`` give ``KL_t = Σ_v p_t(v) (log p_t(v) − log q_t(v)) · T²`` (Hinton et al.'s ``T²``
keeps gradient scale comparable across temperatures). KL(teacher‖student) is the forward KL: the
student is pushed to cover the teacher's mass.

Selective intervention (the rule Shrinkwise implements; the cited paper, Tatarnikova & Mokretsov 2025,
Software & Systems No. 2, is not available here, so this is our reading of its title and abstract-level
description: intervene in training only where the student needs it). In every batch:

1. compute ``KL_t`` for every token (no gradient);
2. the ``k = ceil(select_fraction · n_tokens)`` tokens with the largest ``KL_t`` get weight 1, every other
   token gets weight ``floor`` (0 = skipped entirely);
3. the loss is ``Σ_t w_t · KL_t / Σ_t w_t`` (plus, optionally, the same weights on a hidden-state MSE).

``select_fraction = 1`` (or ``floor = 1``) gives plain distillation with uniform weights, which is what
the comparison in ``benchmarks/training_methods.py`` runs at equal steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def per_token_kl(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``KL(teacher ‖ student)`` per position ``[b, seq]`` (float32; gradient flows to the student)."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (t.exp() * (t - s)).sum(-1) * temperature**2


def selective_weights(kl: torch.Tensor, select_fraction: float, floor: float = 0.0) -> torch.Tensor:
    """Weights of the same shape as ``kl``: 1 on the ``ceil(fraction · n)`` highest-KL tokens, ``floor`` elsewhere."""
    flat = kl.detach().reshape(-1)
    n = flat.numel()
    k = min(n, max(1, math.ceil(select_fraction * n)))
    w = torch.full_like(flat, float(floor))
    w[torch.topk(flat, k).indices] = 1.0
    return w.view_as(kl)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (values * weights).sum() / weights.sum().clamp_min(1e-12)


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """Mean squared difference per token ``[b, seq]``, normalised by the teacher's mean square so layers
    with large activations do not dominate."""
    diff = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(-1)
    return diff / teacher_hidden.float().pow(2).mean().clamp_min(1e-12)
