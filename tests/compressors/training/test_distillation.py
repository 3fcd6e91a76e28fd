"""Selective-intervention distillation: the token weights concentrate on the highest-KL tokens, the
unselected tokens carry no gradient, and the layer-dropped student is a standard checkpoint."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from compressors.base import ConfigError, RunContext
from compressors.methods.selective_distillation import (
    DistillLoss,
    SelectiveDistillation,
    SelectiveDistillationConfig,
)
from compressors.training import distill, student
from tests.compressors.tiny import tiny_model, tiny_tokenizer

CALIB = torch.randint(0, 320, (8, 32), generator=torch.Generator().manual_seed(1))


def test_per_token_kl_is_zero_for_identical_logits_and_positive_otherwise():
    t = torch.randn(2, 5, 11)
    assert torch.allclose(distill.per_token_kl(t, t), torch.zeros(2, 5), atol=1e-6)
    s = t.clone()
    s[0, 3] += torch.randn(11) * 3
    kl = distill.per_token_kl(t, s)
    assert kl[0, 3] > 0.01 and float(kl.sum() - kl[0, 3]) < 1e-5


def test_selective_weights_put_all_weight_on_the_top_kl_tokens():
    kl = torch.tensor([[0.1, 5.0, 0.2, 3.0], [0.0, 0.3, 9.0, 0.05]])
    w = distill.selective_weights(kl, 0.25, floor=0.0)  # ceil(0.25 * 8) = 2 tokens
    assert w.tolist() == [[0, 1, 0, 0], [0, 0, 1, 0]]
    w2 = distill.selective_weights(kl, 0.5, floor=0.1)
    assert sorted(kl[w2 == 1].tolist()) == pytest.approx([0.3, 3.0, 5.0, 9.0])
    assert w2[w2 != 1].tolist() == pytest.approx([0.1] * 4)


def test_unselected_tokens_get_no_gradient():
    torch.manual_seed(0)
    t = torch.randn(1, 6, 7)
    s = torch.randn(1, 6, 7, requires_grad=True)
    kl = distill.per_token_kl(t, s)
    w = distill.selective_weights(kl, 0.34, 0.0)
    distill.weighted_mean(kl, w).backward()
    grad_tokens = s.grad.abs().sum(-1)[0] > 0
    assert grad_tokens.tolist() == (w[0] == 1).tolist() and int(grad_tokens.sum()) == 3


def test_distill_loss_selects_the_tokens_with_largest_teacher_student_kl():
    teacher = tiny_model("llama", seed=0)
    stu = student.drop_layers(teacher, [1])
    cfg = SelectiveDistillationConfig(select_fraction=0.1, seq_len=16)
    loss = DistillLoss(teacher, stu, [1], cfg)
    loss(CALIB[:2, :16])
    w, kl = loss.last_weights, loss.last_kl
    assert int(w.sum()) == 4  # ceil(0.1 * 32)
    assert float(kl[w == 1].min()) >= float(kl[w == 0].max())


@pytest.mark.parametrize(
    "n, keep, rule, expected",
    [
        (8, 4, "uniform", [0, 2, 5, 7]),
        (8, 4, "middle", [0, 1, 6, 7]),
        (5, 5, "uniform", [0, 1, 2, 3, 4]),
        (30, 15, "uniform", None),
    ],
)
def test_layer_choice(n, keep, rule, expected):
    got = student.choose_layers(n, keep, rule)
    assert len(got) == keep and got == sorted(set(got))
    if expected is not None:
        assert got == expected
    if rule == "uniform":
        assert got[0] == 0 and got[-1] == n - 1


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gpt2", "opt"])
def test_student_has_fewer_layers_reloads_and_generates(arch, tmp_path):
    teacher = tiny_model(arch)
    comp = SelectiveDistillation()
    cfg = SelectiveDistillationConfig(
        steps=1,
        seq_len=16,
        batch_size=2,
        val_windows=2,
        drop_ratio=0.5,
        hidden_weight=1.0 if arch == "llama" else 0.0,
    )
    out = comp.compress(teacher, tiny_tokenizer(), cfg, RunContext(calibration=CALIB))
    assert out is not teacher and out.config.num_hidden_layers == 1
    assert teacher.config.num_hidden_layers == 2  # the teacher is untouched
    out.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(back(CALIB[:2]).logits, out(CALIB[:2]).logits, atol=1e-5, rtol=1e-5)
    gen = back.generate(
        CALIB[:1, :4], attention_mask=torch.ones(1, 4, dtype=torch.long), max_new_tokens=3, do_sample=False
    )
    assert gen.shape == (1, 7)
    assert comp.last_report["distillation"]["steps"] == 1


def test_width_pruned_student_on_llama():
    out = SelectiveDistillation().compress(
        tiny_model("llama"),
        tiny_tokenizer(),
        SelectiveDistillationConfig(steps=0, seq_len=16, val_windows=2, drop_ratio=0.0, mlp_ratio=0.5),
        RunContext(calibration=CALIB),
    )
    assert out.config.intermediate_size == 68 and out.model.layers[0].mlp.down_proj.weight.shape[1] == 68


def test_plain_distillation_is_select_fraction_one():
    assert SelectiveDistillationConfig(select_fraction=1.0).is_plain
    assert SelectiveDistillationConfig(floor=1.0).is_plain
    assert not SelectiveDistillationConfig().is_plain


@pytest.mark.parametrize(
    "bad",
    [
        dict(select_fraction=0.0),
        dict(drop_ratio=0.95),
        dict(layer_rule="random"),
        dict(temperature=0.0),
        dict(train_embeddings="yes"),
    ],
)
def test_config_rejects_bad_values_naming_them(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        SelectiveDistillationConfig(**bad)
