"""Bipartite soft matching of neighbouring tokens (ToMe, Bolya et al. 2210.09461), as AIM uses it.

AIM (Zhong et al. 2412.03248) merges similar visual tokens before the LLM. For text the tokens form
one causal sequence, so this version differs in two ways that keep the model causal:

- a token may only merge into its *right* neighbour (the merged token sits at the later position, so
  no earlier position ever sees a later token's content);
- the bipartite split is "even present index" (set A, the tokens that may disappear) against "the
  next token" (set B, which absorbs). Each B token has exactly one candidate, so the matching is a
  top-r choice over A by cosine similarity, as in ToMe, with no conflicts to resolve.

Merged hidden states are size-weighted averages and sizes add up, so that attention can count a merged
token as ``size`` tokens (ToMe's proportional attention: +log(size) on its attention logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MergeResult:
    hidden: torch.Tensor  # [n', H] the surviving tokens' hidden states (merged ones averaged)
    positions: torch.Tensor  # [n'] original positions of the survivors (sorted)
    sizes: torch.Tensor  # [n'] how many original tokens each survivor stands for
    absorbed_positions: torch.Tensor  # [r] positions that disappeared
    absorbed_hidden: torch.Tensor  # [r, H] their hidden states just before merging


def merge_right_neighbours(
    hidden: torch.Tensor,
    positions: torch.Tensor,
    sizes: torch.Tensor,
    r: int,
    protect_first: int = 1,
) -> MergeResult:
    """Merge the ``r`` most similar (token, right neighbour) pairs; the last token is never changed.

    ``hidden`` is [n, H] for one sequence. Candidates A are the present indices protect_first,
    protect_first+2, ... whose right neighbour is not the last token (the last token's state drives
    the next-token prediction and must stay exact). Returns the survivors in order.
    """
    n = hidden.shape[0]
    a_idx = torch.arange(protect_first, n - 2, 2, device=hidden.device)  # a + 1 <= n - 2
    r = min(int(r), a_idx.numel())
    if r <= 0:
        empty = positions[:0]
        return MergeResult(hidden, positions, sizes, empty, hidden[:0])
    b_idx = a_idx + 1
    ha = torch.nn.functional.normalize(hidden[a_idx].float(), dim=-1)
    hb = torch.nn.functional.normalize(hidden[b_idx].float(), dim=-1)
    sim = (ha * hb).sum(-1)
    chosen = sim.topk(r).indices
    src, dst = a_idx[chosen], b_idx[chosen]
    sa, sb = sizes[src].unsqueeze(-1), sizes[dst].unsqueeze(-1)
    new_hidden = hidden.clone()
    new_sizes = sizes.clone()
    new_hidden[dst] = ((hidden[src] * sa + hidden[dst] * sb) / (sa + sb)).to(hidden.dtype)
    new_sizes[dst] = sizes[dst] + sizes[src]
    keep = torch.ones(n, dtype=torch.bool, device=hidden.device)
    keep[src] = False
    return MergeResult(
        hidden=new_hidden[keep],
        positions=positions[keep],
        sizes=new_sizes[keep],
        absorbed_positions=positions[src],
        absorbed_hidden=hidden[src],
    )
