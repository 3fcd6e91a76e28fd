"""Structural pruning of coupled groups, ranked by first-order Taylor importance (LLM-Pruner).

Ma, Fang, Wang, "LLM-Pruner: On the Structural Pruning of Large Language Models", NeurIPS 2023,
arXiv 2305.11627. A *coupled group* is a set of weights that must go together for the model to stay
a valid, smaller dense model:

* an attention head ``h``: rows ``h·d .. (h+1)·d`` of ``q_proj`` (and its bias) and the same columns
  of ``o_proj``; under grouped-query attention (``K`` key/value heads shared by ``G = H / K`` query heads
  each, query head ``h`` reading KV head ``h // G``) the KV head's rows of ``k_proj``/``v_proj`` belong to
  the group of all ``G`` query heads that read it;
* an MLP channel ``j``: row ``j`` of ``gate_proj`` and ``up_proj`` and column ``j`` of ``down_proj``.

Importance of a weight is the first-order Taylor estimate of the loss change when it is removed,
``|w · ∂L/∂w|`` (the paper's "element-wise, first order"), with ``∂L/∂w`` the gradient of the language-
model loss summed over a few calibration batches; a group's importance is the sum over its weights
(the paper's "sum" aggregation).

Two ways to prune attention under GQA (``head_mode``):

* ``kv-groups``: remove whole KV groups (a KV head with its ``G`` query heads). Shrinks the KV cache too;
  on multi-head attention (``G = 1``) this is plain head pruning.
* ``query-heads``: remove the same number of query heads from every KV group, keeping all KV heads,
  so ``H' = K · G'`` and the grouping stays valid.

Widths are made **uniform across layers** (every layer loses the same number of heads and channels,
chosen by each layer's own ranking) because a transformers config has one ``num_attention_heads`` and
one ``intermediate_size``: the result then loads with plain ``AutoModelForCausalLM.from_pretrained``.
LLM-Pruner itself prunes layers unevenly (it skips the first and last layers); that is the difference.

Supported: blocks with ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj`` (Llama, Mistral,
Qwen2, Gemma and their relatives). Others get a :class:`CompressionError` naming what is missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compressors.base import CompressionError, RunContext
from compressors.layers import find_blocks

if TYPE_CHECKING:  # transformers is imported lazily (it costs seconds); only its types are needed here
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
HEAD_MODES = ["auto", "kv-groups", "query-heads"]


@dataclass(frozen=True)
class AttentionShape:
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        return self.n_heads // self.n_kv_heads


def attention_shape(model: PreTrainedModel) -> AttentionShape:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    h = int(cfg.num_attention_heads)
    k = int(getattr(cfg, "num_key_value_heads", None) or h)
    d = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // h)
    return AttentionShape(h, k, d)


def check_supported(model: PreTrainedModel) -> list[nn.Module]:
    """The decoder blocks, after checking each has the coupled projections this pruner understands."""
    mtype = getattr(model.config, "model_type", type(model).__name__)
    try:
        _, blocks = find_blocks(model)
    except CompressionError as exc:
        raise CompressionError(f"structural pruning does not support model_type={mtype!r}: {exc}") from None
    for block in blocks:
        attn, mlp = getattr(block, "self_attn", None), getattr(block, "mlp", None)
        missing = [f"self_attn.{n}" for n in ATTN if not isinstance(getattr(attn, n, None), nn.Linear)]
        missing += [f"mlp.{n}" for n in MLP if not isinstance(getattr(mlp, n, None), nn.Linear)]
        if missing:
            raise CompressionError(
                f"structural pruning does not support model_type={mtype!r}: its blocks lack {missing}. Supported "
                "are Llama-style blocks with separate q/k/v/o projections and a gated MLP (gate/up/down): Llama, "
                "Mistral, Qwen2, Gemma and relatives. GPT-2 (fused c_attn), OPT and GPT-NeoX are not"
            )
    return blocks


def taylor_importance(
    model: PreTrainedModel,
    batches: list[torch.Tensor],
    ctx: RunContext,
    fraction: tuple[float, float] = (0.0, 1.0),
) -> dict[str, dict[str, torch.Tensor]]:
    """``|w · g|`` for every coupled projection of every block, ``g`` the loss gradient summed over batches.

    Returns ``{f"{block}.{proj}": {"weight": [out, in], "bias": [out] or absent}}`` on the CPU. Only the
    projections need gradients; everything else is frozen for the pass (and restored after).
    """
    blocks = check_supported(model)
    device = next(model.parameters()).device
    wanted: dict[str, nn.Parameter] = {}
    for i, block in enumerate(blocks):
        for part, names in (("self_attn", ATTN), ("mlp", MLP)):
            for n in names:
                lin = getattr(getattr(block, part), n)
                wanted[f"{i}.{n}.weight"] = lin.weight
                if lin.bias is not None:
                    wanted[f"{i}.{n}.bias"] = lin.bias
    saved = {id(p): p.requires_grad for p in model.parameters()}
    keep = {id(p) for p in wanted.values()}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
        p.grad = None
    was_training = model.training
    model.eval()  # no dropout: the gradient of the deterministic loss
    lo, hi = fraction
    try:
        for k, batch in enumerate(batches):
            ctx.check_cancelled()
            batch = batch.to(device)
            loss = model(input_ids=batch, labels=batch, use_cache=False).loss
            loss.backward()
            ctx.report(
                "importance",
                lo + (hi - lo) * (k + 1) / len(batches),
                f"gradient batch {k + 1}/{len(batches)} loss {float(loss.detach()):.4f}",
            )
        out: dict[str, dict[str, torch.Tensor]] = {}
        for key, p in wanted.items():
            if p.grad is None:
                raise CompressionError(
                    f"no gradient reached {key}; the layer is not used by the forward pass"
                )
            bi, proj, kind = key.split(".")
            out.setdefault(f"{bi}.{proj}", {})[kind] = (p.detach() * p.grad).abs().float().cpu()
    finally:
        for p in model.parameters():
            p.grad = None
            p.requires_grad_(saved.get(id(p), True))
        model.train(was_training)
    return out


def head_scores(
    imp: dict[str, dict[str, torch.Tensor]], block: int, a: AttentionShape
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(per query head [H], per KV head [K])`` importance of one block (each summed over its weights)."""

    def rows(key: str, n: int) -> torch.Tensor:
        d = imp[f"{block}.{key}"]
        s = d["weight"].sum(1)
        if "bias" in d:
            s = s + d["bias"]
        return s.reshape(n, a.head_dim).sum(1)

    q = rows("q_proj", a.n_heads)
    o = imp[f"{block}.o_proj"]["weight"].sum(0).reshape(a.n_heads, a.head_dim).sum(1)
    kv = rows("k_proj", a.n_kv_heads) + rows("v_proj", a.n_kv_heads)
    return q + o, kv


def channel_scores(imp: dict[str, dict[str, torch.Tensor]], block: int) -> torch.Tensor:
    """Importance of every MLP channel ``[I]`` of one block: gate row + up row + down column."""
    s = imp[f"{block}.gate_proj"]["weight"].sum(1) + imp[f"{block}.up_proj"]["weight"].sum(1)
    s = s + imp[f"{block}.down_proj"]["weight"].sum(0)
    for k in ("gate_proj", "up_proj"):
        if "bias" in imp[f"{block}.{k}"]:
            s = s + imp[f"{block}.{k}"]["bias"]
    return s


def resolve_head_mode(mode: str, a: AttentionShape) -> str:
    if mode == "auto":
        return "kv-groups" if a.group == 1 else "query-heads"
    if mode == "query-heads" and a.group == 1:
        raise CompressionError(
            "head_mode='query-heads' removes query heads within each KV group, but this model has one query "
            "head per KV head (multi-head attention); use head_mode='kv-groups' or 'auto'"
        )
    return mode


def planned_counts(
    a: AttentionShape, intermediate: int, head_ratio: float, mlp_ratio: float, mode: str
) -> tuple[int, int, int]:
    """``(kept query heads, kept KV heads, kept MLP channels)`` per layer: at least one of each is kept."""
    if mode == "kv-groups":
        k_new = max(1, a.n_kv_heads - int(round(head_ratio * a.n_kv_heads)))
        h_new = k_new * a.group
    else:
        g_new = max(1, a.group - int(round(head_ratio * a.group)))
        k_new, h_new = a.n_kv_heads, a.n_kv_heads * g_new
    i_new = max(1, intermediate - int(round(mlp_ratio * intermediate)))
    return h_new, k_new, i_new


@dataclass
class PrunePlan:
    """Which heads and channels each block keeps (sorted indices), and the resulting widths."""

    heads: list[torch.Tensor]  # kept query heads per block
    kv_heads: list[torch.Tensor]  # kept KV heads per block
    channels: list[torch.Tensor]  # kept MLP channels per block
    n_heads: int
    n_kv_heads: int
    intermediate_size: int
    head_mode: str


def plan(
    imp: dict[str, dict[str, torch.Tensor]],
    n_blocks: int,
    a: AttentionShape,
    intermediate: int,
    head_ratio: float,
    mlp_ratio: float,
    head_mode: str,
) -> PrunePlan:
    """Rank each block's groups by importance and keep the same number in every block."""
    mode = resolve_head_mode(head_mode, a)
    h_new, k_new, i_new = planned_counts(a, intermediate, head_ratio, mlp_ratio, mode)
    heads, kvs, chans = [], [], []
    for b in range(n_blocks):
        q, kv = head_scores(imp, b, a)
        if mode == "kv-groups":
            group_score = q.reshape(a.n_kv_heads, a.group).sum(1) + kv
            keep_kv = torch.sort(torch.topk(group_score, k_new).indices).values
            keep_h = (keep_kv[:, None] * a.group + torch.arange(a.group)[None]).reshape(-1)
        else:
            g_new = h_new // a.n_kv_heads
            per = q.reshape(a.n_kv_heads, a.group)
            top = torch.sort(torch.topk(per, g_new, dim=1).indices, dim=1).values
            keep_h = (torch.arange(a.n_kv_heads)[:, None] * a.group + top).reshape(-1)
            keep_kv = torch.arange(a.n_kv_heads)
        heads.append(keep_h)
        kvs.append(keep_kv)
        chans.append(torch.sort(torch.topk(channel_scores(imp, b), i_new).indices).values)
    return PrunePlan(heads, kvs, chans, h_new, k_new, i_new, mode)


def _expand(idx: torch.Tensor, width: int) -> torch.Tensor:
    """Row indices of the kept heads: head ``h`` owns rows ``h·width .. (h+1)·width``."""
    return (idx[:, None] * width + torch.arange(width)[None]).reshape(-1)


def slice_linear(
    lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None
) -> nn.Linear:
    """A new ``nn.Linear`` holding only the given output rows / input columns of ``lin``."""
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        w = w.index_select(0, rows.to(w.device))
        b = b.index_select(0, rows.to(w.device)) if b is not None else None
    if cols is not None:
        w = w.index_select(1, cols.to(w.device))
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new


@torch.no_grad()
def apply_plan(model: PreTrainedModel, p: PrunePlan) -> None:
    """Slice every block's projections to the plan and write the new widths into the config."""
    blocks = check_supported(model)
    a = attention_shape(model)
    for b, block in enumerate(blocks):
        attn, mlp = block.get_submodule("self_attn"), block.get_submodule("mlp")
        q_rows = _expand(p.heads[b], a.head_dim)
        kv_rows = _expand(p.kv_heads[b], a.head_dim)
        ch = p.channels[b]
        # (module, projection, kept rows, kept columns); check_supported found each to be an nn.Linear
        slices: tuple[tuple[nn.Module, str, torch.Tensor | None, torch.Tensor | None], ...] = (
            (attn, "q_proj", q_rows, None),
            (attn, "k_proj", kv_rows, None),
            (attn, "v_proj", kv_rows, None),
            (attn, "o_proj", None, q_rows),
            (mlp, "gate_proj", ch, None),
            (mlp, "up_proj", ch, None),
            (mlp, "down_proj", None, ch),
        )
        for part, name, rows, cols in slices:
            setattr(part, name, slice_linear(getattr(part, name), rows=rows, cols=cols))
        # plain int attributes the modules read in forward (setattr: Module.__setattr__ is typed for
        # tensors and submodules only); the first is always written, the others where the module has them
        sizes = (
            (attn, "num_key_value_groups", p.n_heads // p.n_kv_heads, True),
            (attn, "num_heads", p.n_heads, False),
            (attn, "num_attention_heads", p.n_heads, False),
            (attn, "num_key_value_heads", p.n_kv_heads, False),
            (mlp, "intermediate_size", p.intermediate_size, False),
        )
        for part, name, value, always in sizes:
            if always or hasattr(part, name):
                setattr(part, name, value)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cfg.head_dim = a.head_dim  # no longer hidden_size // num_attention_heads: must be written explicitly
    cfg.num_attention_heads = p.n_heads
    cfg.num_key_value_heads = p.n_kv_heads
    cfg.intermediate_size = p.intermediate_size


def prune_summary(before: Any, p: PrunePlan, a: AttentionShape, intermediate: int) -> dict[str, Any]:
    return {
        "head_mode": p.head_mode,
        "heads": f"{a.n_heads} -> {p.n_heads}",
        "kv_heads": f"{a.n_kv_heads} -> {p.n_kv_heads}",
        "intermediate_size": f"{intermediate} -> {p.intermediate_size}",
        "head_dim": a.head_dim,
    }
