"""LazyLLM and AIM on tiny random Llama, Mistral, Qwen2 and Gemma-3 text models: exactness at ratio 0
(prefill and greedy decoding), the pruned fractions, the cache bookkeeping of pruning and revival,
generate, save/load, the fallbacks and the errors."""

from __future__ import annotations

import math

import pytest
import torch

from compressors import hf_compat
from compressors.base import CompressionError, ConfigError, RunContext, get_compressor
from compressors.dynamic import manifest
from compressors.dynamic.tokens import (
    PrunedCache,
    TokenPlan,
    install_token_plan,
    last_prefill_stats,
    uninstall_token_plan,
)
from compressors.methods.aim import AIMConfig
from compressors.methods.lazyllm import LazyLLMConfig, stage_schedule
from tests.compressors.dynamic.models import TOKEN_ARCHS, deep_tiny, prompt
from tests.compressors.tiny import tiny_model


def _gen(model, ids, n=6):
    return model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)


def _greedy(model, ids, n=6):
    out = model.generate(
        ids,
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        output_scores=True,
        return_dict_in_generate=True,
    )
    return out.sequences, torch.stack(out.scores)


@pytest.mark.parametrize("arch", TOKEN_ARCHS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@torch.no_grad()
def test_ratio_zero_gives_identical_logits_and_generation(arch, attn):
    """Keep fraction 1.0 / no merging: the prefill logits and every greedy step equal the untouched model's."""
    model = deep_tiny(arch, attn=attn)
    ids = prompt()  # 48 tokens: longer than Gemma-3's 16-token window
    ref_logits = model(ids).logits
    ref_seq, ref_scores = _greedy(model, ids)
    for cid, cfg in [
        ("lazyllm", LazyLLMConfig(ratio=0.0)),
        ("aim", AIMConfig(merge_ratio=0.0, prune_ratio=0.0)),
    ]:
        get_compressor(cid).compress(model, None, cfg, RunContext())
        assert hf_compat.attn_implementation(model.config) != attn  # the plan's attention is in use
        assert torch.allclose(model(ids).logits, ref_logits, rtol=0, atol=1e-5), cid
        seq, scores = _greedy(model, ids)
        assert torch.equal(seq, ref_seq), cid
        assert torch.allclose(scores, ref_scores, rtol=0, atol=1e-4), cid
        stats = last_prefill_stats(model)
        assert stats.tokens_per_layer == [ids.shape[1]] * 6
    uninstall_token_plan(model)
    assert hf_compat.attn_implementation(model.config) == attn
    assert torch.equal(model(ids).logits, ref_logits)


@pytest.mark.parametrize("arch", TOKEN_ARCHS)
@torch.no_grad()
def test_lazyllm_drops_the_scheduled_share_of_tokens_per_layer(arch):
    model = deep_tiny(arch)
    ids = prompt(48)
    cfg = LazyLLMConfig(ratio=0.5, start=0.34, stages=2)
    get_compressor("lazyllm").compress(model, None, cfg, RunContext())
    out = model(ids)
    schedule = stage_schedule(6, 0.5, 0.34, 2)
    assert schedule == {2: 0.75, 4: 0.5}
    expected = [48, 48, math.ceil(0.75 * 48), math.ceil(0.75 * 48), 24, 24]
    assert last_prefill_stats(model).tokens_per_layer == expected
    assert out.logits.shape == (1, 48, model.config.vocab_size)
    cache = out.cache
    assert isinstance(cache, PrunedCache) and cache.get_seq_length() == 48
    # first token (attention sink) and last token reach every layer
    for j in range(6):
        assert {0, 47} <= set(cache.key_pos[j].tolist())
    assert last_prefill_stats(model).compute_fraction == pytest.approx(sum(expected) / (6 * 48))


def _keys(cache, j):
    return hf_compat.layer_keys(cache, j)


def _ref_keys(cache, j, n=40):
    """Keys of positions 0..n-1 at layer j of an untouched model's cache; a sliding-window layer of the
    untouched model keeps only the last positions, so the others are NaN (never equal to anything)."""
    k = _keys(cache, j)
    full = k.new_full((*k.shape[:2], n, k.shape[-1]), float("nan"))
    full[:, :, n - k.shape[2] :] = k
    return full


def _close_where_known(a, b):
    known = ~b.isnan().any(-1).any(1)[0]  # positions the reference holds
    assert bool(known.any())
    return torch.allclose(a[:, :, known], b[:, :, known], rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", TOKEN_ARCHS)
@torch.no_grad()
def test_the_cache_holds_exactly_the_tokens_that_reached_each_layer(arch):
    """Tokens dropped at layer 2 leave layers 0-1 untouched, and the kept ones enter layer 2 unchanged.

    A token's keys at a layer depend only on its own input to that layer, so up to and including the first
    pruning layer every cached key must equal the unpruned model's key at the same position.
    """
    model = deep_tiny(arch)
    ids = prompt(40)
    ref = model(ids, use_cache=True).cache
    get_compressor("lazyllm").compress(
        model, None, LazyLLMConfig(ratio=0.6, start=0.34, stages=1), RunContext()
    )
    pruned = model(ids).cache
    n_kept = math.ceil(0.4 * 40)
    assert last_prefill_stats(model).tokens_per_layer == [40, 40] + [n_kept] * 4
    for j in (0, 1):
        assert pruned.key_pos[j].tolist() == list(range(40))
        assert _close_where_known(_keys(pruned, j), _ref_keys(ref, j))
    kept = pruned.key_pos[2]
    assert kept.numel() == n_kept and {0, 39} <= set(kept.tolist())
    assert _close_where_known(_keys(pruned, 2), _ref_keys(ref, 2)[:, :, kept])
    for j in range(2, 6):
        assert torch.equal(pruned.key_pos[j], kept)  # the same tokens go on, nothing else
        assert _keys(pruned, j).shape[2] == n_kept
    assert sorted(pruned.aux[2][0].tolist()) == sorted(set(range(40)) - set(kept.tolist()))


@pytest.mark.parametrize("arch", TOKEN_ARCHS)
@pytest.mark.parametrize("revive", [True, False])
@torch.no_grad()
def test_generate_keeps_the_cache_consistent_and_revives_from_the_aux_cache(arch, revive):
    model = deep_tiny(arch)
    ids = prompt(40)
    get_compressor("lazyllm").compress(
        model, None, LazyLLMConfig(ratio=0.7, start=0.2, stages=3, revive=revive), RunContext()
    )
    out = model.generate(
        ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, return_dict_in_generate=True
    )
    assert out.sequences.shape[1] == 48
    cache = out.cache
    assert isinstance(cache, PrunedCache)  # the one made at prefill went round every step
    assert cache.get_seq_length() == 47  # the last generated token is not fed back
    prev = None
    for j in range(6):
        pos = cache.key_pos[j]
        assert pos.unique().numel() == pos.numel(), f"a token was computed twice at layer {j}"
        assert _keys(cache, j).shape[2] == pos.numel()
        assert set(range(40, 47)) <= set(pos.tolist())  # decoded tokens go through every layer
        if prev is not None:
            assert set(pos.tolist()) <= prev, "a token reached a layer without the previous one"
        prev = set(pos.tolist())
    stats = last_prefill_stats(model)
    computed = sum(cache.key_pos[j].numel() for j in range(6))
    if revive:
        assert cache.revived_total > 0 and stats.revived == cache.revived_total
        assert computed > sum(stats.tokens_per_layer) + 7 * 6  # revived prompt tokens joined later layers
    else:
        assert cache.revived_total == 0
        assert computed == sum(stats.tokens_per_layer) + 7 * 6  # no prompt token came back


@torch.no_grad()
def test_an_explicit_pruned_cache_and_step_by_step_decoding_match_generate():
    model = deep_tiny("mistral")
    ids = prompt(40)
    get_compressor("lazyllm").compress(model, None, LazyLLMConfig(ratio=0.5, start=0.2), RunContext())
    expected = _gen(model, ids)
    cache = PrunedCache()
    out = model(ids, cache=cache)
    assert out.cache is cache
    seq = ids
    for _ in range(6):
        nxt = out.logits[:, -1:].argmax(-1)
        seq = torch.cat([seq, nxt], dim=1)
        out = model(nxt, cache=cache)
    assert torch.equal(seq, expected)
    assert cache.get_seq_length() == 46


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
@torch.no_grad()
def test_revival_computes_a_stored_token_from_its_layer_once_and_moves_it_on(arch, monkeypatch):
    """A decoding step that ranks a stored token first revives it: it runs layers 2-5 once, from its state.

    Pruning starts at layer 2 (a global layer of the Gemma-3 model, whose untouched cache keeps every key),
    so the stored state is the unpruned model's input to layer 2 and the revived token's keys at layer 2
    must equal the unpruned model's keys at its position.
    """
    from compressors.dynamic import tokens

    model = deep_tiny(arch)
    ids = prompt(40)
    ref = model(ids, use_cache=True).cache
    install_token_plan(model, TokenPlan(keep={2: 0.3}, revive=True))
    cache = model(ids).cache
    target = int(cache.aux[2][0][0])
    real = tokens._last_token_attention

    def prefer_target(query, key, scaling, softcap, allowed, bias):  # the new token "needs" the stored one
        s = real(query, key, scaling, softcap, allowed, bias)  # shape and dtype of the real ranking
        s = torch.isin(cache.key_pos[1], cache.key_pos[2]).to(s.dtype)  # those already at layer 2 ...
        s[cache.key_pos[1] == target] = 10.0  # ... and the target rank first, so only the target comes back
        return s

    monkeypatch.setattr(tokens, "_last_token_attention", prefer_target)
    before = [cache.key_pos[j].numel() for j in range(6)]
    model(torch.tensor([[5]]), cache=cache)
    assert [cache.key_pos[j].numel() for j in range(6)] == [b + 1 for b in before[:2]] + [
        b + 2 for b in before[2:]
    ]
    assert cache.key_pos[2][-2:].tolist() == [target, 40]  # revived first, then the new token
    assert target not in cache.aux[2][0].tolist() and cache.revived_total == 1
    i = cache.key_pos[2].numel() - 2
    assert _close_where_known(_keys(cache, 2)[:, :, i : i + 1], _ref_keys(ref, 2)[:, :, target : target + 1])
    model(torch.tensor([[6]]), cache=cache)  # still preferred: already there, never computed twice
    assert cache.revived_total == 1
    assert cache.key_pos[5].unique().numel() == cache.key_pos[5].numel()


def test_merge_right_neighbours_merges_the_most_similar_pairs_forward():
    from compressors.dynamic.merging import merge_right_neighbours

    h = torch.tensor([[1.0, 0], [0, 1], [0, 1.1], [1, 0], [1, 0.1], [0, 1], [5, 5]])
    pos = torch.arange(7)
    res = merge_right_neighbours(h, pos, torch.ones(7), r=1, protect_first=1)
    # candidates (1,2) and (3,4); (1,2) are more similar (cos≈1 vs 0.995)
    assert res.absorbed_positions.tolist() == [1]
    assert res.positions.tolist() == [0, 2, 3, 4, 5, 6]
    assert res.sizes.tolist() == [1, 2, 1, 1, 1, 1]
    assert torch.allclose(res.hidden[1], torch.tensor([0, 1.05]))
    assert torch.equal(res.hidden[-1], h[-1])  # the last token is never changed
    res2 = merge_right_neighbours(h, pos, torch.ones(7), r=10, protect_first=1)
    assert res2.absorbed_positions.tolist() == [1, 3]  # index 5 would merge into the last token: not allowed
    assert (res2.absorbed_positions + 1).tolist() == [2, 4]


@pytest.mark.parametrize("arch", TOKEN_ARCHS)
@torch.no_grad()
def test_aim_merges_then_prunes_and_generates(arch):
    model = deep_tiny(arch)
    ids = prompt(48)
    cfg = AIMConfig(merge_ratio=0.25, merge_layer=1, prune_ratio=0.5, prune_start=0.5, stages=1)
    get_compressor("aim").compress(model, None, cfg, RunContext())
    out = model(ids)
    stats = last_prefill_stats(model)
    assert stats.tokens_per_layer[0] == 48
    assert stats.tokens_per_layer[1] == 48 - 12
    assert stats.tokens_per_layer[3:] == [24, 24, 24]
    cache = out.cache
    assert cache.key_bias[1] is not None and float(cache.key_bias[1].max()) == pytest.approx(math.log(2))
    for j in range(1, 6):
        assert _keys(cache, j).shape[2] == cache.key_pos[j].numel() == stats.tokens_per_layer[j]
    assert cache.key_pos[0].tolist() == list(range(48))
    gen = _gen(model, ids)
    assert gen.shape == (1, 54)
    assert last_prefill_stats(model).revived == 0


@torch.no_grad()
def test_batches_and_padding_fall_back_to_the_unpruned_forward():
    model = deep_tiny("llama")
    ids = torch.cat([prompt(30, 1), prompt(30, 2)])
    ref = model(ids).logits
    get_compressor("lazyllm").compress(model, None, LazyLLMConfig(ratio=0.5), RunContext())
    assert torch.equal(model(ids).logits, ref)


@torch.no_grad()
def test_saved_dynamic_checkpoint_reloads_and_reinstalls(tmp_path):
    from transformers import AutoModelForCausalLM

    model = deep_tiny("qwen2")
    ids = prompt(40)
    cfg = LazyLLMConfig(ratio=0.6, start=0.3, stages=2)
    get_compressor("lazyllm").compress(model, None, cfg, RunContext())
    expected = _gen(model, ids)
    model.save_pretrained(tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # original weights, plain transformers
    section = manifest.dynamic_section(plain)
    assert section["method"] == "lazyllm" and section["config"]["ratio"] == 0.6
    assert manifest.reinstall(plain)
    assert torch.equal(_gen(plain, ids), expected)
    assert last_prefill_stats(plain).tokens_per_layer == last_prefill_stats(model).tokens_per_layer


def test_unsupported_architecture_is_refused_with_the_supported_list():
    with pytest.raises(CompressionError, match="llama"):
        get_compressor("lazyllm").compress(tiny_model("gpt2"), None, LazyLLMConfig(), RunContext())


def test_unsupported_transformers_version_is_refused_naming_the_range():
    with pytest.raises(CompressionError, match=r"supports transformers >=5\.24,<6.*4\.57\.1 is installed"):
        hf_compat.check_version("4.57.1")
    with pytest.raises(CompressionError, match="6.0.0 is installed"):
        hf_compat.check_version("6.0.0")
    hf_compat.check_version("5.24.0")


@torch.no_grad()
def test_a_scoring_pass_without_cache_runs_the_untouched_model():
    model = deep_tiny("gemma3_text", attn="eager")
    ids = prompt(40)
    ref = model(ids, use_cache=False).logits
    get_compressor("lazyllm").compress(model, None, LazyLLMConfig(ratio=0.7), RunContext())
    assert torch.equal(model(ids, use_cache=False).logits, ref)


def test_configs_validate_with_the_allowed_range():
    with pytest.raises(ConfigError, match="ratio"):
        LazyLLMConfig(ratio=1.5)
    with pytest.raises(ConfigError, match="stages"):
        LazyLLMConfig(stages=0)
    with pytest.raises(ConfigError, match="merge_ratio"):
        AIMConfig(merge_ratio=0.7)
    with pytest.raises(ConfigError, match="merge_layer"):
        get_compressor("aim").plan(6, AIMConfig(merge_layer=6))
    with pytest.raises(CompressionError, match="not above"):
        TokenPlan(keep={2: 0.5, 4: 0.8}).validate(6)


def test_flags_and_estimates():
    from compressors.base import ModelShape

    shape = ModelShape(
        n_params=135_000_000,
        n_layers=30,
        hidden_size=576,
        intermediate_size=1536,
        vocab_size=49152,
        n_heads=9,
        n_kv_heads=3,
    )
    for cid in ("lazyllm", "aim"):
        comp = get_compressor(cid)
        assert (comp.phase, comp.impact, comp.needs_calibration) == ("inference", "dynamic", False)
        est = comp.estimate(shape, comp.config_cls())
        assert est.peak_memory_bytes >= 135_000_000 * 4 and "%" in est.note
