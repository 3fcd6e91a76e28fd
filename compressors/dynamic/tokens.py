"""Dynamic token pruning and merging inside a Llama-family decoder, for LazyLLM and AIM.

The decoder's own forward (``LlamaModel.forward`` and its Qwen2/Mistral twins in transformers 5.x:
embed, rotary position embeddings, a causal mask, then each ``DecoderLayer(hidden_states,
attention_mask=..., position_embeddings=(cos, sin), past_key_values=cache)``) is replaced on the
instance by :func:`_token_plan_forward`, which runs the same layers on a *shrinking set of prompt
tokens*:

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

Works with ``generate`` (the cache object is returned in the output and passed back by generate) for
one sequence at a time; a batch of several sequences or a padded mask falls back to the untouched
forward (logged), since each row would drop different tokens. A forward with ``use_cache=False`` (a
teacher-forced scoring pass such as the harness's window perplexity, where every position is an
output) also runs untouched: pruning only serves the next tokens after a prompt. Rows of the output for
tokens that stopped early hold their hidden state where they stopped (only the last row is the
method's prediction).
"""

from __future__ import annotations

import logging
import math
import types
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast

from compressors.base import CompressionError

log = logging.getLogger(__name__)

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


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

    ``get_seq_length`` returns the number of positions processed so far (what generate uses to place
    the next token), not the length of layer 0. ``aux[l]`` holds (positions, hidden states at the input
    of ``l``) of prompt tokens that stopped before layer ``l``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.key_pos: dict[int, torch.Tensor] = {}
        self.key_bias: dict[int, torch.Tensor | None] = {}
        self.aux: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.seen = 0
        self.prompt_len = 0
        self.stats: PrefillStats | None = None
        self.revived_total = 0

    def get_seq_length(self, layer_idx: int | None = 0) -> int:
        return self.seen


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def decoder_of(model: Any) -> Any:
    """The inner decoder (``model.model``) of a supported causal LM, or an error naming what is missing."""
    mtype = getattr(model.config, "model_type", "?")
    if mtype not in SUPPORTED_MODEL_TYPES:
        raise CompressionError(
            f"token pruning supports model types {list(SUPPORTED_MODEL_TYPES)}, not {mtype!r}: it rewrites "
            "the decoder loop and needs the Llama layout (embed_tokens, layers, norm, rotary_emb)"
        )
    inner = getattr(model, "model", None)
    missing = [a for a in ("embed_tokens", "layers", "norm", "rotary_emb") if not hasattr(inner, a)]
    if inner is None or missing:
        raise CompressionError(
            f"{type(model).__name__}.model lacks {missing or ['model']}; cannot install token pruning"
        )
    return inner


class _Runner:
    """One forward call of the token-plan decoder loop (kept as an object so helpers share state)."""

    def __init__(self, inner: Any, plan: TokenPlan, cache: PrunedCache) -> None:
        self.inner, self.plan, self.cache = inner, plan, cache
        self.layers = list(inner.layers[: inner.config.num_hidden_layers])
        self.sdpa = inner.config._attn_implementation == "sdpa"
        self.windows = []
        for layer in self.layers:
            attn = layer.self_attn
            w = (
                attn.sliding_window
                if hasattr(attn, "sliding_window")
                else getattr(inner.config, "sliding_window", None)
            )
            self.windows.append(int(w) if w else None)
        self.keep_layers = sorted(plan.keep)

    # -- attention pieces -------------------------------------------------------------------------
    def _mask(
        self,
        j: int,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        k_bias: torch.Tensor | None,
        dtype: torch.dtype,
        prefill: bool,
    ) -> torch.Tensor | None:
        w = self.windows[j]
        window_bites = w is not None and bool((q_pos.max() - k_pos.min()) >= w)
        if k_bias is None and not window_bites:
            if q_pos.numel() == 1:
                return None  # one query after every cached key: attends to all of them
            if prefill and self.sdpa:
                return (
                    None  # keys == queries in order: sdpa's is_causal is exact (as the original model does)
                )
        allowed = k_pos[None, :] <= q_pos[:, None]
        if w is not None:
            allowed &= k_pos[None, :] > (q_pos[:, None] - w)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=q_pos.device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        if k_bias is not None:
            mask = mask + k_bias.to(dtype)[None, :]
        return mask[None, None]

    def run_layer(
        self, j: int, h: torch.Tensor, pos: torch.Tensor, bias: torch.Tensor | None, prefill: bool
    ) -> torch.Tensor:
        """Run layer ``j`` on tokens at positions ``pos`` and record their keys' positions in the cache."""
        cache = self.cache
        old_pos = cache.key_pos.get(j, pos[:0])
        k_pos = torch.cat([old_pos, pos])
        old_bias = cache.key_bias.get(j)
        if old_bias is None and bias is None:
            k_bias = None
        else:
            k_bias = torch.cat(
                [
                    old_bias if old_bias is not None else torch.zeros(old_pos.numel(), device=pos.device),
                    bias if bias is not None else torch.zeros(pos.numel(), device=pos.device),
                ]
            )
        mask = self._mask(j, pos, k_pos, k_bias, h.dtype, prefill and old_pos.numel() == 0)
        cos, sin = self.inner.rotary_emb(h, pos[None])
        out = self.layers[j](
            h,
            attention_mask=mask,
            position_embeddings=(cos, sin),
            position_ids=pos[None],
            past_key_values=cache,
            use_cache=True,
        )
        hidden: torch.Tensor = out[0] if isinstance(out, tuple) else out
        cache.key_pos[j], cache.key_bias[j] = k_pos, k_bias
        return hidden

    def last_token_attention(self, j: int, h_last_in: torch.Tensor, last_pos: torch.Tensor) -> torch.Tensor:
        """Attention of the last token over layer ``j``'s cached keys, averaged over heads ([K])."""
        layer = self.layers[j]
        attn = layer.self_attn
        x = layer.input_layernorm(h_last_in)
        q = attn.q_proj(x).view(1, 1, -1, attn.head_dim).transpose(1, 2)  # [1, H, 1, D]
        cos, sin = self.inner.rotary_emb(x, last_pos.view(1, 1))
        q = q * cos.unsqueeze(1) + _rotate_half(q) * sin.unsqueeze(1)
        # [1, kvH, K, D]; a getattr because linear-attention cache layers (typed alongside) have no keys
        keys = getattr(self.cache.layers[j], "keys", None)
        if not isinstance(keys, torch.Tensor):  # the layer ran before this is called
            raise CompressionError(f"layer {j} has no cached keys to score tokens with")
        groups = q.shape[1] // keys.shape[1]
        k = keys.repeat_interleave(groups, dim=1) if groups > 1 else keys
        logits = (q @ k.transpose(2, 3))[0, :, 0].float() * attn.scaling  # [H, K]
        k_pos = self.cache.key_pos[j]
        key_bias = self.cache.key_bias.get(j)
        if key_bias is not None:
            logits = logits + key_bias.float()
        allowed = k_pos <= last_pos
        window = self.windows[j]
        if window is not None:
            allowed &= k_pos > last_pos - window
        logits = logits.masked_fill(~allowed, float("-inf"))
        scores: torch.Tensor = logits.softmax(-1).mean(0)
        return scores

    def n_keep(self, j: int) -> int:
        return max(math.ceil(self.plan.keep[j] * self.cache.prompt_len), self.plan.protect_first + 1)

    # -- decoding: revival from the aux cache -------------------------------------------------------
    def revive(self, j: int, h_last_in: torch.Tensor, last_pos: torch.Tensor) -> int:
        cache = self.cache
        if j not in cache.aux or cache.aux[j][0].numel() == 0:
            return 0
        scores = self.last_token_attention(j - 1, h_last_in, last_pos)
        k_pos = cache.key_pos[j - 1]
        prompt = k_pos < cache.prompt_len
        cand_pos, cand_scores = k_pos[prompt], scores[prompt]
        top = cand_pos[cand_scores.topk(min(self.n_keep(j), cand_pos.numel())).indices]
        aux_pos, aux_h = cache.aux[j]
        wanted = torch.isin(aux_pos, top)
        if not bool(wanted.any()):
            return 0
        r_pos, r_h = aux_pos[wanted], aux_h[wanted]
        cache.aux[j] = (aux_pos[~wanted], aux_h[~wanted])
        order = r_pos.argsort()
        r_pos, h = r_pos[order], r_h[order][None]
        nxt = next((layer for layer in self.keep_layers if layer > j), len(self.layers))
        for jj in range(j, nxt):
            h = self.run_layer(jj, h, r_pos, None, prefill=False)
        if nxt < len(self.layers):
            p, s = cache.aux.get(nxt, (r_pos[:0], h[0, :0]))
            cache.aux[nxt] = (torch.cat([p, r_pos]), torch.cat([s, h[0]]))
        cache.revived_total += int(r_pos.numel())
        return int(r_pos.numel())

    # -- the loop ----------------------------------------------------------------------------------
    def forward(self, h: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        cache, plan = self.cache, self.plan
        prefill = cache.seen == 0
        T = pos.numel()
        stats: PrefillStats | None = None  # set during a prefill
        if prefill:
            cache.prompt_len = T
            stats = cache.stats = PrefillStats(prompt_tokens=T)
        exits: list[tuple[torch.Tensor, torch.Tensor]] = []
        sizes: torch.Tensor | None = None
        h_last_in: torch.Tensor | None = None
        revived = 0
        for j in range(len(self.layers)):
            if prefill and j in plan.keep and h_last_in is not None:
                n_target = self.n_keep(j)
                n = h.shape[1]
                if n_target < n:
                    scores = self.last_token_attention(j - 1, h_last_in, pos[-1])
                    scores[: plan.protect_first] = float("inf")
                    scores[-1] = float("inf")
                    kept = scores.topk(n_target).indices.sort().values
                    drop = torch.ones(n, dtype=torch.bool, device=h.device)
                    drop[kept] = False
                    cache.aux[j] = (pos[drop], h[0, drop])
                    exits.append((pos[drop], h[0, drop]))
                    h, pos = h[:, kept], pos[kept]
                    sizes = sizes[kept] if sizes is not None else None
            if prefill and plan.merge.get(j, 0.0) > 0:
                from compressors.dynamic.merging import merge_right_neighbours

                cur = sizes if sizes is not None else torch.ones(h.shape[1], device=h.device)
                res = merge_right_neighbours(
                    h[0], pos, cur, int(plan.merge[j] * h.shape[1]), plan.protect_first
                )
                if res.absorbed_positions.numel():
                    exits.append((res.absorbed_positions, res.absorbed_hidden))
                    h, pos, sizes = res.hidden[None], res.positions, res.sizes
            if not prefill and plan.revive and j in plan.keep and h_last_in is not None:
                revived += self.revive(j, h_last_in, pos[-1])
            if (j + 1) in plan.keep:
                h_last_in = h[:, -1:]
            bias = sizes.log() if sizes is not None and bool((sizes > 1).any()) else None
            h = self.run_layer(j, h, pos, bias, prefill)
            if stats is not None:
                stats.tokens_per_layer.append(int(h.shape[1]))
        if stats is not None:
            stats.revived = 0
            full = h.new_zeros(1, T, h.shape[-1])
            base = int(cache.seen)
            for p, hid in exits:  # rows of tokens that stopped early: their state where they stopped
                full[0, p - base] = hid
            full[0, pos - base] = h[0]
            h = full
        elif cache.stats is not None:
            cache.stats.revived += revived
        cache.seen += T
        return h


def _token_plan_forward(
    self: Any,
    input_ids: torch.LongTensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.LongTensor | None = None,
    past_key_values: Any = None,
    inputs_embeds: torch.Tensor | None = None,
    use_cache: bool | None = None,
    **kwargs: Any,
) -> BaseModelOutputWithPast:
    """Replacement for the decoder's ``forward`` (bound to the instance by :func:`install_token_plan`)."""
    plan: TokenPlan = self._shrinkwise_token_plan
    given = input_ids if input_ids is not None else inputs_embeds
    if given is None:
        raise ValueError("give input_ids or inputs_embeds")
    batch = given.shape[0]
    padded = attention_mask is not None and (attention_mask.dim() != 2 or not bool(attention_mask.all()))
    foreign_cache = (
        past_key_values is not None
        and not isinstance(past_key_values, PrunedCache)
        and past_key_values.get_seq_length() > 0
    )
    wants_extra = kwargs.get("output_hidden_states") or kwargs.get("output_attentions")
    if use_cache is None:
        use_cache = bool(getattr(self.config, "use_cache", True))
    if not use_cache and past_key_values is None:
        # no cache is being built, so no generation follows: a teacher-forced scoring pass (perplexity,
        # training) where every position is an output. Token pruning only serves the prompt's next tokens,
        # so this pass runs the untouched model.
        scored: BaseModelOutputWithPast = self._shrinkwise_original_forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=None,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        return scored
    if batch != 1 or padded or foreign_cache or wants_extra:
        if isinstance(past_key_values, PrunedCache):
            raise CompressionError("a pruned cache can only continue one unpadded sequence")
        log.warning(
            "%s: batch=%d padded=%s: running the unpruned forward", plan.method or "token plan", batch, padded
        )
        unpruned: BaseModelOutputWithPast = self._shrinkwise_original_forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return unpruned
    cache = past_key_values if isinstance(past_key_values, PrunedCache) else PrunedCache()
    if inputs_embeds is None:
        inputs_embeds = self.embed_tokens(input_ids)
    T = inputs_embeds.shape[1]
    pos = position_ids[0] if position_ids is not None else torch.arange(cache.seen, cache.seen + T)
    pos = pos.to(inputs_embeds.device).long()
    runner = _Runner(self, plan, cache)
    h = runner.forward(inputs_embeds, pos)
    self._shrinkwise_last_stats = cache.stats
    return BaseModelOutputWithPast(last_hidden_state=self.norm(h), cache=cache if use_cache else None)


def install_token_plan(model: Any, plan: TokenPlan) -> Any:
    """Install ``plan`` on ``model`` in place (weights untouched) and return it; re-installing replaces."""
    inner = decoder_of(model)
    plan.validate(inner.config.num_hidden_layers)
    if hasattr(inner, "_shrinkwise_original_forward"):
        uninstall_token_plan(model)
    inner._shrinkwise_original_forward = inner.forward
    inner._shrinkwise_token_plan = plan
    inner.forward = types.MethodType(_token_plan_forward, inner)
    return model


def uninstall_token_plan(model: Any) -> Any:
    """Give ``model`` its original decoder forward back."""
    inner = decoder_of(model)
    if hasattr(inner, "_shrinkwise_original_forward"):
        del inner.forward  # the instance attribute; the class method shows through again
        del inner._shrinkwise_original_forward
        del inner._shrinkwise_token_plan
    return model


def last_prefill_stats(model: Any) -> PrefillStats | None:
    return getattr(decoder_of(model), "_shrinkwise_last_stats", None)
