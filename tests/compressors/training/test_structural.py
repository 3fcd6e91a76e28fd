"""LLM-Pruner's structural pruning: coupled groups keep shapes consistent (GQA included), the result is a
plain dense transformers checkpoint, and the groups kept are the ones with the highest Taylor importance."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from compressors.base import CompressionError, ConfigError, RunContext
from compressors.methods.llm_pruner import LLMPruner, LLMPrunerConfig
from compressors.training import structural
from tests.compressors.tiny import tiny_model, tiny_tokenizer

CALIB = torch.randint(0, 320, (8, 32), generator=torch.Generator().manual_seed(0))


def _cfg(**kw) -> LLMPrunerConfig:
    base = dict(steps=0, seq_len=16, batch_size=2, val_windows=2, importance_batches=1)
    return LLMPrunerConfig(**{**base, **kw})


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_pruned_model_has_uniform_smaller_shapes_and_reloads_with_from_pretrained(arch, tmp_path):
    model = tiny_model(arch)
    a = structural.attention_shape(model)
    inter = model.config.intermediate_size
    out = LLMPruner().compress(
        model, tiny_tokenizer(), _cfg(head_ratio=0.5, mlp_ratio=0.25), RunContext(calibration=CALIB)
    )
    # GQA (4 query heads, 2 KV heads) in auto mode: one query head removed from each KV group
    h_new, k_new, i_new = a.n_kv_heads * (a.group - 1), a.n_kv_heads, inter - round(0.25 * inter)
    for layer in out.model.layers:
        at, mlp = layer.self_attn, layer.mlp
        assert at.q_proj.weight.shape == (h_new * a.head_dim, out.config.hidden_size)
        assert (
            at.k_proj.weight.shape == at.v_proj.weight.shape == (k_new * a.head_dim, out.config.hidden_size)
        )
        assert at.o_proj.weight.shape == (out.config.hidden_size, h_new * a.head_dim)
        assert mlp.gate_proj.weight.shape == mlp.up_proj.weight.shape == (i_new, out.config.hidden_size)
        assert mlp.down_proj.weight.shape == (out.config.hidden_size, i_new)
        if arch == "qwen2":
            assert at.q_proj.bias.shape == (h_new * a.head_dim,)
    assert (out.config.num_attention_heads, out.config.num_key_value_heads) == (h_new, k_new)
    assert out.config.head_dim == a.head_dim and out.config.intermediate_size == i_new
    out.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(back(CALIB[:2]).logits, out(CALIB[:2]).logits, atol=1e-5, rtol=1e-5)


def test_kv_group_mode_removes_whole_kv_groups_with_their_query_heads():
    model = tiny_model("llama")  # 4 heads, 2 KV heads, head_dim 18
    out = LLMPruner().compress(
        model,
        tiny_tokenizer(),
        _cfg(head_ratio=0.5, mlp_ratio=0.0, head_mode="kv-groups"),
        RunContext(calibration=CALIB),
    )
    assert (out.config.num_attention_heads, out.config.num_key_value_heads) == (2, 1)
    assert out.model.layers[0].self_attn.k_proj.weight.shape[0] == 18
    assert out.model.layers[0].self_attn.num_key_value_groups == 2


def test_query_heads_mode_on_multi_head_attention_is_refused_with_the_fix():
    with pytest.raises(CompressionError, match="kv-groups"):
        structural.resolve_head_mode("query-heads", structural.AttentionShape(4, 4, 16))


def test_nothing_removed_leaves_the_model_exact():
    model = tiny_model("mistral")
    ref = tiny_model("mistral")
    out = LLMPruner().compress(
        model, tiny_tokenizer(), _cfg(head_ratio=0.0, mlp_ratio=0.0), RunContext(calibration=CALIB)
    )
    with torch.no_grad():
        torch.testing.assert_close(out(CALIB[:2]).logits, ref(CALIB[:2]).logits)


def test_taylor_importance_is_weight_times_summed_gradient():
    model = tiny_model("llama")
    batches = [CALIB[:2], CALIB[2:4]]
    imp = structural.taylor_importance(model, batches, RunContext())
    w = model.model.layers[1].mlp.down_proj.weight
    for b in batches:
        model(input_ids=b, labels=b).loss.backward()
    torch.testing.assert_close(imp["1.down_proj"]["weight"], (w.detach() * w.grad).abs())


def test_plan_keeps_the_most_important_channels_and_heads():
    a = structural.AttentionShape(4, 2, 2)
    hid, inter = 3, 6
    imp = {}
    for proj, shape in {
        "q_proj": (8, hid),
        "k_proj": (4, hid),
        "v_proj": (4, hid),
        "o_proj": (hid, 8),
        "gate_proj": (inter, hid),
        "up_proj": (inter, hid),
        "down_proj": (hid, inter),
    }.items():
        imp[f"0.{proj}"] = {"weight": torch.zeros(shape)}
    imp["0.up_proj"]["weight"][[1, 4]] = 5.0  # channels 1 and 4 matter most
    imp["0.up_proj"]["weight"][5] = 1.0
    imp["0.q_proj"]["weight"][2:4] = 3.0  # query head 1 (group 0) and head 2 (group 1) matter
    imp["0.o_proj"]["weight"][:, 4:6] = 3.0
    p = structural.plan(imp, 1, a, inter, head_ratio=0.5, mlp_ratio=0.5, head_mode="query-heads")
    assert p.channels[0].tolist() == [1, 4, 5]
    assert p.heads[0].tolist() == [1, 2] and p.kv_heads[0].tolist() == [0, 1]


@pytest.mark.parametrize("arch", ["gpt2", "opt"])
def test_architectures_without_coupled_projections_get_an_error_naming_them(arch):
    with pytest.raises(CompressionError, match=f"model_type='{arch}'"):
        LLMPruner().compress(tiny_model(arch), tiny_tokenizer(), _cfg(), RunContext(calibration=CALIB))


def test_lora_recovery_trains_and_merges_into_a_plain_model(tmp_path):
    model = tiny_model("qwen2")
    comp = LLMPruner()
    out = comp.compress(
        model,
        tiny_tokenizer(),
        _cfg(steps=2, lr=1e-2, head_ratio=0.5, mlp_ratio=0.25),
        RunContext(calibration=CALIB),
    )
    assert type(out).__name__ == "Qwen2ForCausalLM"
    assert not any("lora" in n for n, _ in out.named_parameters())
    rep = comp.last_report
    assert rep["recovery"]["steps"] == 2 and rep["lora_params"] > 0
    assert rep["params_after"] < rep["params_before"]
    assert rep["ppl_recovered"] != rep["ppl_pruned"]  # the merged adapters changed the weights


@pytest.mark.parametrize(
    "bad",
    [
        dict(head_ratio=0.95),
        dict(mlp_ratio=-0.1),
        dict(head_mode="heads"),
        dict(lora_rank=0),
        dict(steps=1.5),
        dict(lr=0.0),
    ],
)
def test_config_rejects_bad_values_naming_them(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        LLMPrunerConfig(**bad)
