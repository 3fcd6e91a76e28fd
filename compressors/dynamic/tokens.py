"""Dynamic token pruning and merging inside a decoder, for LazyLLM and AIM.

The model's own forward runs untouched; the method is installed with public transformers mechanisms
(the only internals it still needs are behind :mod:`compressors.hf_compat`, which checks the
installed transformers version):

- a forward pre-hook on the decoder (``model.get_decoder()``) decides per call whether the plan applies
  (batch 1, no padding, a cache being built) and gives the call a :class:`PrunedCache`;
- forward pre-hooks on every decoder layer (``register_forward_pre_hook(..., with_kwargs=True)``) pass
  each layer only the tokens that reach it, with their rotary position embeddings, and a forward hook
  on the last layer puts the rows of the tokens that stopped early back in place;
- an attention function registered in ``transformers.AttentionInterface`` (selected with
  ``set_attn_implementation``; a companion in ``AttentionMaskInterface``) wraps the model's own "sdpa"
  or "eager" attention: it builds the mask from the tokens' original positions (causal, the layer's
  sliding window, +log(size) of merged tokens) and reads the last token's attention, which ranks the
  tokens. Calls that the plan does not touch go straight to the original function with the model's mask.

What the plan does to the prompt:

- at the input of chosen layers, the prompt tokens least attended by the last token (softmax of the
  last token's query against the previous layer's keys, averaged over heads) stop; how many remain is
  a fraction of the prompt (:class:`TokenPlan.keep`), so deeper layers see fewer tokens;
- at the input of other chosen layers (AIM), similar neighbouring tokens are merged
  (:mod:`compressors.dynamic.merging`) and attention counts a merged token as its size;
- the first token (attention sink) and the last token are never dropped;
- every token keeps its original position (RoPE and the causal mask use original positions), so the
  KV cache of layer ``l`` holds exactly the tokens that reached ``l``, and :class:`PrunedCache`
  remembers their positions per layer;
- a dropped token's hidden state at the layer where it stopped goes to an auxiliary cache (LazyLLM's
  Aux Cache). During decoding, at each pruning layer the new token's attention over the previous
  layer's keys is ranked again; a prompt token that now ranks in the kept set but never reached this
  layer is *revived*: its stored hidden state is run through the layers up to the next pruning layer,
  its keys and values join those layers' caches (each token is computed at most once per layer), and
  it waits in the next layer's auxiliary cache.

Works with ``generate`` (the decoder returns the cache it was given, and generate passes it back) for
one sequence at a time; a batch of several sequences or a padded mask falls back to the untouched
forward (logged), since each row would drop different tokens. A forward with ``use_cache=False`` (a
teacher-forced scoring pass such as the harness's window perplexity, where every position is an
output) also runs untouched: pruning only serves the next tokens after a prompt. Rows of the output for
tokens that stopped early hold their hidden state where they stopped (only the last row is the
method's prediction).

Supported architectures: :data:`SUPPORTED_MODEL_TYPES` (Llama, Mistral, Qwen2 and Gemma-3 text with
its sliding-window and global layers). A pre-run check can call :func:`check_model_type` with a
config's ``model_type`` before loading anything. The per-layer caches keep every key of the tokens
that reached the layer (sliding-window layers too: the window is applied by the mask), since pruned
layers hold different tokens.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from compressors import hf_compat
from compressors.base import CompressionError
from compressors.dynamic.merging import merge_right_neighbours

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "gemma3_text")

# Name under which the plan's attention function is registered (and set as the model's implementation).
ATTENTION_NAME = "shrinkwise_token_plan"
# Attention implementations the plan can wrap: both accept an additive float mask.
WRAPPABLE_ATTENTION = ("sdpa", "eager")


def check_model_type(model_type: str) -> None:
    """Refuse an architecture token pruning does not support, naming the supported ones."""
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CompressionError(
            f"token pruning supports model types {list(SUPPORTED_MODEL_TYPES)}, not {model_type!r}: it needs "
            "decoder layers that take (cos, sin) rotary embeddings and use transformers' attention interface"
        )


@dataclass
class TokenPlan:
    """What happens to prompt tokens at the input of each decoder layer.

    ``keep[l] = f``: from layer ``l`` on, only ``ceil(f * prompt_length)`` prompt tokens continue
    (the most attended by the last token); fractions must not increase with depth.
    ``merge[l] = f``: at the input of layer ``l``, up to ``f`` of the present tokens merge into their
    right neighbour. ``revive``: pruned tokens can come back during decoding (LazyLLM).
    """

    keep: dict[int, float] = field(default_factory=dict)
    merge: dict[int, float] = field(default_factory=dict)
    revive: bool = False
    protect_first: int = 1
    method: str = ""

    def validate(self, n_layers: int) -> None:
        last = 1.0
        for layer in sorted(self.keep):
            f = self.keep[layer]
            if not 1 <= layer < n_layers:
                raise CompressionError(
                    f"pruning layer {layer} is outside 1..{n_layers - 1}; the first layer has no previous "
                    "attention to rank tokens by"
                )
            if not 0.0 < f <= 1.0 or f > last + 1e-9:
                raise CompressionError(
                    f"keep fraction {f} at layer {layer} must be in (0, 1] and not above the previous {last}"
                )
            last = f
        for layer, f in self.merge.items():
            if not 0 <= layer < n_layers or not 0.0 <= f <= 0.5:
                raise CompressionError(
                    f"merge at layer {layer} with fraction {f}: the layer must be in 0..{n_layers - 1} and "
                    "the fraction in [0, 0.5] (a token can merge at most once per layer)"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "keep": {str(k): v for k, v in self.keep.items()},
            "merge": {str(k): v for k, v in self.merge.items()},
            "revive": self.revive,
            "protect_first": self.protect_first,
            "method": self.method,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenPlan:
        return cls(
            keep={int(k): float(v) for k, v in d.get("keep", {}).items()},
            merge={int(k): float(v) for k, v in d.get("merge", {}).items()},
            revive=bool(d.get("revive", False)),
            protect_first=int(d.get("protect_first", 1)),
            method=str(d.get("method", "")),
        )


@dataclass
class PrefillStats:
    """What one prefill did: tokens entering each layer (the compute actually spent) and revivals."""

    prompt_tokens: int
    tokens_per_layer: list[int] = field(default_factory=list)
    revived: int = 0

    @property
    def compute_fraction(self) -> float:
        """Token-layer pairs computed / those of the unpruned prefill (≈ its share of linear FLOPs)."""
        full = self.prompt_tokens * max(len(self.tokens_per_layer), 1)
        return sum(self.tokens_per_layer) / full if full else 1.0


class PrunedCache(DynamicCache):
    """A DynamicCache whose layers may hold different tokens, with their original positions.

    ``get_seq_length`` returns the number of positions processed so far (what generate and the model use
    to place the next token), not the length of layer 0. ``key_pos[l]`` / ``key_bias[l]`` follow the keys
    of layer ``l`` (recorded in :meth:`update`, the one place every key enters); ``aux[l]`` holds
    (positions, hidden states at the input of ``l``) of prompt tokens that stopped before layer ``l``.
    """

    def __init__(self) -> None:
        super().__init__()  # no config: plain per-layer caches that keep every key (see module docstring)
        self.key_pos: dict[int, torch.Tensor] = {}
        self.key_bias: dict[int, torch.Tensor | None] = {}
        self.aux: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.rope: dict[int, Any] = {}  # per layer, the prompt's (cos, sin): revival needs old positions
        self.seen = 0
        self.prompt_len = 0
        self.stats: PrefillStats | None = None
        self.revived_total = 0
        self.pending: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        return self.seen

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pending is None:
            raise CompressionError(
                "a pruned cache can only be extended by a model with its token plan installed"
            )
        pos, bias = self.pending
        if pos.numel() != key_states.shape[-2]:
            raise CompressionError(
                f"layer {layer_idx} got {key_states.shape[-2]} keys for {pos.numel()} tokens"
            )
        old_pos = self.key_pos.get(layer_idx, pos[:0])
        old_bias = self.key_bias.get(layer_idx)
        if old_bias is None and bias is None:
            new_bias = None
        else:
            zeros = functools.partial(torch.zeros, device=pos.device)
            new_bias = torch.cat(
                [
                    old_bias if old_bias is not None else zeros(old_pos.numel()),
                    bias if bias is not None else zeros(pos.numel()),
                ]
            )
        self.key_pos[layer_idx] = torch.cat([old_pos, pos])
        self.key_bias[layer_idx] = new_bias
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)


@dataclass
class _Passthrough:
    """A decoder call the plan leaves untouched (batch > 1, padding, no cache, ...), set in :data:`_RUN`
    so that its layers and attention calls know they belong to an installed plan but must not be changed."""

    ctl: _Controller
    token: contextvars.Token[_Call | None] | None = None  # to restore :data:`_RUN` when the call ends


@dataclass
class _Run:
    """State of one decoder call the plan applies to, shared by the hooks and the attention function
    (via :data:`_RUN`)."""

    ctl: _Controller
    cache: PrunedCache
    pos: torch.Tensor  # original positions of the rows now flowing through the layers
    prefill: bool = False
    T: int = 0
    base: int = 0
    sizes: torch.Tensor | None = None  # how many original tokens each row stands for (after merging)
    exits: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    layer: int | None = None  # the layer whose attention runs now
    want_scores: bool = False
    scores: torch.Tensor | None = None  # last token's attention over the previous layer's keys
    reviving: bool = False
    revived: int = 0
    token: contextvars.Token[_Call | None] | None = None  # to restore :data:`_RUN` when the call ends

    @property
    def prefill_stats(self) -> PrefillStats:
        """The stats of this prefill (the decoder pre-hook puts them on the cache when a prefill starts)."""
        stats = self.cache.stats
        if stats is None:
            raise CompressionError("a prefill ran on a pruned cache without prefill stats")
        return stats

    @property
    def pending(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Positions and key biases of the rows the running layer adds (set by the layer pre-hook)."""
        pending = self.cache.pending
        if pending is None:
            raise CompressionError(
                f"layer {self.layer} runs attention without the positions of its tokens (no layer pre-hook ran)"
            )
        return pending


# The decoder call now running under an installed plan: one it applies to, one it leaves untouched, or none.
_Call = _Run | _Passthrough
_RUN: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("shrinkwise_token_run", default=None)
# For calls made outside a hooked decoder call (e.g. a layer called on its own): the wrapped implementation,
# keyed by the id of the config that selects :data:`ATTENTION_NAME`.
_ORIGINAL_BY_CONFIG: dict[int, str] = {}


def _eager_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention (the "eager" implementation is not in the registry; each model module has its own).

    Same operations in the same order as transformers' eager functions for these architectures: GQA heads
    repeated, scaled scores, optional tanh soft-capping, additive mask, float32 softmax, weighted values.
    """
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scale
    if softcap is not None:
        weights = torch.tanh(weights / softcap) * softcap
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = torch.nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(
        weights, p=dropout, training=bool(getattr(module, "training", False))
    )
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


# An attention function of transformers' interface: (module, query, key, value, mask, **kwargs) -> (out, weights).
_AttentionFunction = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def _original_attention(name: str) -> _AttentionFunction:
    if name == "eager":
        return _eager_attention
    fn: _AttentionFunction = ALL_ATTENTION_FUNCTIONS[name]
    return fn


def _original_name(run: _Call | None, config: Any) -> str:
    if run is not None:
        return run.ctl.original
    return _ORIGINAL_BY_CONFIG.get(id(config), "sdpa")


def _plan_mask_function(*args: Any, **kwargs: Any) -> Any:
    """Mask companion of :func:`_plan_attention`: the wrapped implementation's mask, or none when the plan
    runs (the plan's attention builds its own from positions, so the model's full mask is not needed)."""
    run = _RUN.get()
    if isinstance(run, _Run):
        return None
    return ALL_MASK_ATTENTION_FUNCTIONS[_original_name(run, kwargs.get("config"))](*args, **kwargs)


def _last_token_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    scaling: float,
    softcap: float | None,
    allowed: torch.Tensor,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """Attention of the last query over all keys of the layer, averaged over heads ([K], float32)."""
    q = query[0, :, -1].float()  # [H, D]
    k = key[0].float()  # [kvH, K, D]
    k = k.repeat_interleave(q.shape[0] // k.shape[0], dim=0)
    logits = torch.einsum("hd,hkd->hk", q, k) * scaling
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    if bias is not None:
        logits = logits + bias.float()
    logits = logits.masked_fill(~allowed, float("-inf"))
    return logits.softmax(-1).mean(0)


def _plan_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The registered attention function: position-aware masks and last-token ranking around sdpa/eager."""
    run = _RUN.get()
    original = _original_attention(_original_name(run, getattr(module, "config", None)))
    if not isinstance(run, _Run) or run.layer is None:
        return original(module, query, key, value, attention_mask, **kwargs)
    cache, j = run.cache, run.layer
    q_pos = run.pending[0]
    k_pos, k_bias = cache.key_pos[j], cache.key_bias[j]
    window = kwargs.get("sliding_window")
    window_bites = window is not None and bool((q_pos.max() - k_pos.min()) >= window)
    mask = None
    plain_prefill = q_pos.numel() == k_pos.numel() and bool(torch.equal(q_pos, k_pos))
    plain_step = q_pos.numel() == 1 and bool((k_pos <= q_pos).all())
    if (
        k_bias is not None
        or window_bites
        or not (plain_step or (plain_prefill and run.ctl.original == "sdpa"))
    ):
        allowed = k_pos[None, :] <= q_pos[:, None]
        if window is not None:
            allowed &= k_pos[None, :] > (q_pos[:, None] - window)
        mask = torch.zeros(allowed.shape, dtype=query.dtype, device=query.device)
        mask.masked_fill_(~allowed, torch.finfo(query.dtype).min)
        if k_bias is not None:
            mask = mask + k_bias.to(query.dtype)[None, :]
        mask = mask[None, None]
    if run.want_scores:
        last = q_pos[-1]
        allowed = k_pos <= last
        if window is not None:
            allowed &= k_pos > last - window
        scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
        run.scores = _last_token_attention(query, key, scaling, kwargs.get("softcap"), allowed, k_bias)
    return original(module, query, key, value, mask, **kwargs)


_registered = False


def _register_attention() -> None:
    global _registered
    if not _registered:
        AttentionInterface.register(ATTENTION_NAME, _plan_attention)
        AttentionMaskInterface.register(ATTENTION_NAME, _plan_mask_function)
        _registered = True


class _Controller:
    """The hooks of one installed plan and what they share (the plan, the model, the last stats)."""

    def __init__(self, model: Any, inner: Any, plan: TokenPlan, original: str) -> None:
        self.model, self.inner, self.plan, self.original = model, inner, plan, original
        self.layers = hf_compat.decoder_layers(inner)
        self.keep_layers = sorted(plan.keep)
        self.last_stats: PrefillStats | None = None
        self.handles: list[Any] = []

    def attach(self) -> None:
        self.handles.append(self.inner.register_forward_pre_hook(self._pre_decoder, with_kwargs=True))
        self.handles.append(self.inner.register_forward_hook(self._post_decoder, always_call=True))
        for j, layer in enumerate(self.layers):
            pre = functools.partial(self._pre_layer, j)
            post = functools.partial(self._post_layer, j)
            self.handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
            self.handles.append(layer.register_forward_hook(post))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    # -- the decoder call ---------------------------------------------------------------------------
    def _pre_decoder(
        self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        name = hf_compat.cache_kwarg(module, kwargs)
        cache = kwargs.get(name)
        batch, T = hf_compat.input_length(args, kwargs)
        mask = kwargs.get("attention_mask")
        padded = mask is not None and (
            not isinstance(mask, torch.Tensor) or mask.dim() != 2 or not bool(mask.all())
        )
        use_cache = kwargs.get("use_cache")
        if use_cache is None:
            use_cache = bool(getattr(module.config, "use_cache", True))
        foreign = cache is not None and not isinstance(cache, PrunedCache) and cache.get_seq_length() > 0
        extra = kwargs.get("output_hidden_states") or kwargs.get("output_attentions")
        run: _Call = _Passthrough(ctl=self)
        if not use_cache and cache is None:
            pass  # teacher-forced scoring pass: no generation follows, so the untouched model runs
        elif batch != 1 or padded or foreign or extra or not use_cache:
            if isinstance(cache, PrunedCache):
                raise CompressionError("a pruned cache can only continue one unpadded sequence")
            log.warning(
                "%s: batch=%d padded=%s: running the unpruned forward",
                self.plan.method or "token plan",
                batch,
                padded,
            )
        else:
            if not isinstance(cache, PrunedCache):
                cache = PrunedCache()  # replaces an empty cache (e.g. the one generate prepared)
            kwargs = {**kwargs, name: cache}
            pos = kwargs.get("position_ids")
            device = kwargs.get("inputs_embeds") if kwargs.get("input_ids") is None else kwargs["input_ids"]
            device = device.device if device is not None else args[0].device
            if pos is None:
                pos = torch.arange(cache.seen, cache.seen + T, device=device)[None]
                kwargs["position_ids"] = pos
            run_pos = pos[0].long()
            run = _Run(ctl=self, cache=cache, pos=run_pos, prefill=cache.seen == 0, T=T, base=int(run_pos[0]))
            if run.prefill:
                cache.prompt_len = T
                cache.stats = PrefillStats(prompt_tokens=T)
        run.token = _RUN.set(run)
        return args, kwargs

    def _post_decoder(self, module: Any, args: tuple[Any, ...], output: Any) -> None:
        run = _RUN.get()
        if run is None or run.ctl is not self:
            return
        if run.token is None:
            raise CompressionError("a decoder call ended without the context token its plan pre-hook sets")
        _RUN.reset(run.token)
        if not isinstance(run, _Run):
            return
        run.cache.pending = None
        if output is None:  # the forward raised
            return
        if run.prefill:
            run.prefill_stats.revived = 0
        elif run.cache.stats is not None:
            run.cache.stats.revived += run.revived
        run.cache.seen += run.T
        self.last_stats = run.cache.stats

    # -- each layer -----------------------------------------------------------------------------------
    def _n_keep(self, run: _Run, j: int) -> int:
        return max(math.ceil(self.plan.keep[j] * run.cache.prompt_len), self.plan.protect_first + 1)

    def _pre_layer(
        self, j: int, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        run = _RUN.get()
        if not isinstance(run, _Run) or run.ctl is not self:
            return None
        if run.reviving:  # a revival call made below: its rows and positions are already set
            run.layer = j
            return None
        cache, plan = run.cache, self.plan
        h = hf_compat.get_hidden(args, kwargs)
        pe = kwargs.get("position_embeddings")
        if run.prefill:
            if pe is None:
                raise CompressionError("the decoder passes no position_embeddings to its layers")
            cache.rope[j] = pe
        if run.prefill and j in plan.keep and run.scores is not None:
            n_target, n = self._n_keep(run, j), h.shape[1]
            if n_target < n:
                scores = run.scores.clone()
                scores[: plan.protect_first] = float("inf")
                scores[-1] = float("inf")
                kept = scores.topk(n_target).indices.sort().values
                drop = torch.ones(n, dtype=torch.bool, device=h.device)
                drop[kept] = False
                cache.aux[j] = (run.pos[drop], h[0, drop])
                run.exits.append((run.pos[drop], h[0, drop]))
                h, run.pos = h[:, kept], run.pos[kept]
                run.sizes = run.sizes[kept] if run.sizes is not None else None
        if run.prefill and plan.merge.get(j, 0.0) > 0:
            cur = run.sizes if run.sizes is not None else torch.ones(h.shape[1], device=h.device)
            res = merge_right_neighbours(
                h[0], run.pos, cur, int(plan.merge[j] * h.shape[1]), plan.protect_first
            )
            if res.absorbed_positions.numel():
                run.exits.append((res.absorbed_positions, res.absorbed_hidden))
                h, run.pos, run.sizes = res.hidden[None], res.positions, res.sizes
        if not run.prefill and plan.revive and j in plan.keep and run.scores is not None:
            run.revived += self._revive(run, j, run.scores, kwargs)
        run.scores = None
        run.want_scores = (j + 1) in plan.keep and (run.prefill or plan.revive)
        run.layer = j
        bias = run.sizes.log() if run.sizes is not None and bool((run.sizes > 1).any()) else None
        cache.pending = (run.pos, bias)
        kwargs = {**kwargs, "position_ids": run.pos[None]}
        if run.pos.numel() != run.T and pe is not None:  # fewer rows than the call has: their (cos, sin) only
            kwargs["position_embeddings"] = hf_compat.select_positions(pe, run.pos - run.base)
        return hf_compat.set_hidden(args, kwargs, h)

    def _post_layer(self, j: int, module: Any, args: tuple[Any, ...], output: Any) -> Any:
        run = _RUN.get()
        if not isinstance(run, _Run) or run.ctl is not self or run.reviving:
            return None
        run.layer = None
        if not run.prefill:
            return None
        h = hf_compat.output_hidden(output)
        run.prefill_stats.tokens_per_layer.append(int(h.shape[1]))
        if j != len(self.layers) - 1 or h.shape[1] == run.T:
            return None
        full = h.new_zeros(1, run.T, h.shape[-1])
        for p, hid in run.exits:  # rows of tokens that stopped early: their state where they stopped
            full[0, p - run.base] = hid
        full[0, run.pos - run.base] = h[0]
        return hf_compat.replace_output_hidden(output, full)

    # -- decoding: revival from the aux cache ---------------------------------------------------------
    def _revive(self, run: _Run, j: int, scores: torch.Tensor, kwargs: dict[str, Any]) -> int:
        """Revive the prompt tokens waiting in layer ``j``'s aux cache that the new token's attention
        over layer ``j - 1`` (``scores``, one per key of that layer) now ranks in the kept set."""
        cache = run.cache
        if j not in cache.aux or cache.aux[j][0].numel() == 0:
            return 0
        k_pos = cache.key_pos[j - 1]
        prompt = k_pos < cache.prompt_len
        cand_pos, cand_scores = k_pos[prompt], scores[prompt]
        top = cand_pos[cand_scores.topk(min(self._n_keep(run, j), cand_pos.numel())).indices]
        aux_pos, aux_h = cache.aux[j]
        wanted = torch.isin(aux_pos, top)
        if not bool(wanted.any()):
            return 0
        r_pos, r_h = aux_pos[wanted], aux_h[wanted]
        cache.aux[j] = (aux_pos[~wanted], aux_h[~wanted])
        order = r_pos.argsort()
        r_pos, h = r_pos[order], r_h[order][None]
        nxt = next((layer for layer in self.keep_layers if layer > j), len(self.layers))
        run.reviving, run.want_scores = True, False
        try:
            for jj in range(j, nxt):
                cache.pending = (r_pos, None)
                call = {**kwargs, "position_ids": r_pos[None], "attention_mask": None}
                call["position_embeddings"] = hf_compat.select_positions(cache.rope[jj], r_pos)
                call.pop("hidden_states", None)
                h = hf_compat.output_hidden(self.layers[jj](h, **call))
        finally:
            run.reviving = False
        if nxt < len(self.layers):
            p, s = cache.aux.get(nxt, (r_pos[:0], h[0, :0]))
            cache.aux[nxt] = (torch.cat([p, r_pos]), torch.cat([s, h[0]]))
        cache.revived_total += int(r_pos.numel())
        return int(r_pos.numel())


def decoder_of(model: Any) -> Any:
    """The inner decoder of a supported causal LM, or an error naming what is missing."""
    check_model_type(getattr(model.config, "model_type", "?"))
    inner = hf_compat.decoder(model)
    if inner is None or not hf_compat.decoder_layers(inner):
        raise CompressionError(
            f"{type(model).__name__} has no decoder with layers; cannot install token pruning"
        )
    return inner


def install_token_plan(model: Any, plan: TokenPlan) -> Any:
    """Install ``plan`` on ``model`` in place (weights untouched) and return it; re-installing replaces."""
    hf_compat.check_version()
    inner = decoder_of(model)
    plan.validate(inner.config.num_hidden_layers)
    if getattr(inner, "_shrinkwise_tokens", None) is not None:
        uninstall_token_plan(model)
    original = hf_compat.attn_implementation(model.config)
    if original not in WRAPPABLE_ATTENTION:
        raise CompressionError(
            f"token pruning wraps the {list(WRAPPABLE_ATTENTION)} attention implementations, not {original!r}; "
            "load the model with attn_implementation='sdpa' or 'eager'"
        )
    _register_attention()
    ctl = _Controller(model, inner, plan, original)
    model.set_attn_implementation(ATTENTION_NAME)
    _ORIGINAL_BY_CONFIG[id(model.config)] = original
    ctl.attach()
    inner._shrinkwise_tokens = ctl
    return model


def uninstall_token_plan(model: Any) -> Any:
    """Remove the hooks and give ``model`` its original attention implementation back."""
    inner = decoder_of(model)
    ctl: _Controller | None = getattr(inner, "_shrinkwise_tokens", None)
    if ctl is not None:
        ctl.detach()
        model.set_attn_implementation(ctl.original)
        _ORIGINAL_BY_CONFIG.pop(id(model.config), None)
        del inner._shrinkwise_tokens
    return model


def last_prefill_stats(model: Any) -> PrefillStats | None:
    ctl = getattr(decoder_of(model), "_shrinkwise_tokens", None)
    return ctl.last_stats if ctl is not None else None


def installed_plan(model: Any) -> TokenPlan | None:
    """The token plan installed on ``model``, or None (also for architectures token pruning does not support)."""
    if getattr(model.config, "model_type", None) not in SUPPORTED_MODEL_TYPES:
        return None
    ctl = getattr(hf_compat.decoder(model), "_shrinkwise_tokens", None)
    return ctl.plan if ctl is not None else None
