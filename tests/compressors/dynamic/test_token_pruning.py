"""LazyLLM and AIM on tiny random Llama, Mistral and Qwen2 models: exactness at ratio 0, the pruned
fractions, the cache bookkeeping of revival, generate, save/load and the errors."""

from __future__ import annotations

import math

import pytest
import torch

from compressors.base import CompressionError, ConfigError, RunContext, get_compressor
from compressors.dynamic import manifest
from compressors.dynamic.tokens import PrunedCache, TokenPlan, install_token_plan, last_prefill_stats
from compressors.methods.aim import AIMConfig
from compressors.methods.lazyllm import LazyLLMConfig, stage_schedule
from tests.compressors.dynamic.models import TOKEN_ARCHS, deep_tiny, prompt
from tests.compressors.tiny import tiny_model


def _gen(model, ids, n=6):
    return model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)


@pytest.mark.parametrize("arch", TOKEN_ARCHS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@torch.no_grad()
def test_ratio_zero_gives_identical_logits_and_generation(arch, attn):
    model = deep_tiny(arch, attn=attn)
    ids = prompt()
    ref_logits = model(ids).logits
    ref_gen = _gen(model, ids)
    for cid, cfg in [
        ("lazyllm", LazyLLMConfig(ratio=0.0)),
        ("aim", AIMConfig(merge_ratio=0.0, prune_ratio=0.0)),
    ]:
        get_compressor(cid).compress(model, None, cfg, RunContext())
        assert torch.equal(model(ids).logits, ref_logits), cid
        assert torch.equal(_gen(model, ids), ref_gen), cid
        stats = last_prefill_stats(model)
        assert stats.tokens_per_layer == [ids.shape[1]] * 6


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
    cache = out.past_key_values
    assert isinstance(cache, PrunedCache) and cache.get_seq_length() == 48
    # first token (attention sink) and last token reach every layer
    for j in range(6):
        assert {0, 47} <= set(cache.key_pos[j].tolist())
    assert last_prefill_stats(model).compute_fraction == pytest.approx(sum(expected) / (6 * 48))


@torch.no_grad()
def test_pruning_changes_only_what_comes_after_the_first_stage():
    """Tokens dropped at layer 2 leave layers 0-1 untouched: their keys equal the unpruned model's."""
    model = deep_tiny("llama")
    ids = prompt(40)
    ref = model(ids, use_cache=True).past_key_values
    get_compressor("lazyllm").compress(
        model, None, LazyLLMConfig(ratio=0.6, start=0.34, stages=1), RunContext()
    )
    pruned = model(ids).past_key_values
    for j in (0, 1):
        assert torch.allclose(pruned.layers[j].keys, ref.layers[j].keys, atol=1e-6)
    assert pruned.key_pos[2].numel() == math.ceil(0.4 * 40)
    assert pruned.layers[2].keys.shape[2] == math.ceil(0.4 * 40)


@pytest.mark.parametrize("revive", [True, False])
@torch.no_grad()
def test_generate_keeps_the_cache_consistent_and_revives_from_the_aux_cache(revive):
    model = deep_tiny("llama")
    ids = prompt(40)
    get_compressor("lazyllm").compress(
        model, None, LazyLLMConfig(ratio=0.7, start=0.2, stages=3, revive=revive), RunContext()
    )
    cache = PrunedCache()
    out = model.generate(
        ids,
        max_new_tokens=8,
        min_new_tokens=8,
        do_sample=False,
        past_key_values=cache,
        return_dict_in_generate=True,
    )
    assert out.sequences.shape[1] == 48
    cache = out.past_key_values
    assert cache.get_seq_length() == 47  # the last generated token is not fed back
    prev = None
    for j in range(6):
        pos = cache.key_pos[j]
        assert pos.unique().numel() == pos.numel(), f"a token was computed twice at layer {j}"
        assert cache.layers[j].keys.shape[2] == pos.numel()
        assert set(range(40, 47)) <= set(pos.tolist())  # decoded tokens go through every layer
        if prev is not None:
            assert set(pos.tolist()) <= prev, "a token reached a layer without the previous one"
        prev = set(pos.tolist())
    if revive:
        assert cache.revived_total > 0
        stats = last_prefill_stats(model)
        computed = sum(cache.key_pos[j].numel() for j in range(6))
        assert computed > sum(stats.tokens_per_layer) + 7 * 6  # revived prompt tokens joined later layers
    else:
        assert cache.revived_total == 0
        stats = last_prefill_stats(model)
        assert cache.key_pos[5].numel() == stats.tokens_per_layer[5] + 7  # no prompt token came back


@torch.no_grad()
def test_revival_computes_a_stored_token_from_its_layer_once_and_moves_it_on(monkeypatch):
    """Revival at layer 3 runs the stored state through layers 3-5; its keys are what layer 3 gives it."""
    from compressors.dynamic.tokens import _rotate_half, _Runner

    model = deep_tiny("llama")
    ids = prompt(40)
    install_token_plan(model, TokenPlan(keep={3: 0.3}, revive=True))
    cache = model(ids).past_key_values
    aux_pos, aux_h = cache.aux[3]
    target = int(aux_pos[0])
    layer = model.model.layers[3]
    attn = layer.self_attn
    x = layer.input_layernorm(aux_h[:1][None])
    cos, sin = model.model.rotary_emb(x, aux_pos[:1][None])
    k = attn.k_proj(x).view(1, 1, -1, attn.head_dim).transpose(1, 2)
    k = k * cos.unsqueeze(1) + _rotate_half(k) * sin.unsqueeze(1)

    runner = _Runner(model.model, model.model._shrinkwise_token_plan, cache)

    def scores_preferring_target(j, h_last_in, last_pos):  # the new token "needs" the stored one
        s = torch.isin(cache.key_pos[j], cache.key_pos[3]).float()  # those already at layer 3
        s[cache.key_pos[j] == target] = 10.0
        return s

    monkeypatch.setattr(runner, "last_token_attention", scores_preferring_target)
    before = [cache.key_pos[j].numel() for j in range(6)]
    assert runner.revive(3, None, torch.tensor(40)) == 1
    assert [cache.key_pos[j].numel() for j in range(6)] == before[:3] + [b + 1 for b in before[3:]]
    assert int(cache.key_pos[3][-1]) == target and target not in cache.aux[3][0].tolist()
    assert torch.allclose(cache.layers[3].keys[:, :, -1], k[:, :, 0], atol=1e-5)
    assert runner.revive(3, None, torch.tensor(40)) == 0  # never computed twice at a layer


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
    cache = out.past_key_values
    assert cache.key_bias[1] is not None and float(cache.key_bias[1].max()) == pytest.approx(math.log(2))
    gen = _gen(model, ids)
    assert gen.shape == (1, 54)
    assert cache.revived_total == 0


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
