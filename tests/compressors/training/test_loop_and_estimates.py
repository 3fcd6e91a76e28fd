"""The shared training loop (schedule, per-step progress, cancellation), the windows it trains on, and
the three training compressors' registry flags and cost estimates."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressors.base import Cancelled, CompressionError, ModelShape, RunContext, all_compressors
from compressors.training.data import BatchSampler, cut_windows, prepare, split_validation
from compressors.training.loop import lr_at, n_params, train

DEMO_SHAPE = ModelShape(
    n_params=134_515_008,
    n_layers=30,
    hidden_size=576,
    intermediate_size=1536,
    vocab_size=49152,
    n_heads=9,
    n_kv_heads=3,
)


def test_lr_warms_up_then_decays_to_a_tenth():
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_windows_are_cut_per_row_and_validation_is_held_back():
    tok = torch.arange(2 * 50).reshape(2, 50)
    w = cut_windows(tok, 16)
    assert w.shape == (6, 16) and w[3, 0] == 50
    train_w, val = split_validation(w, 2)
    assert train_w.shape[0] == 4 and torch.equal(val, w[4:])
    with pytest.raises(CompressionError, match="seq_len=64"):
        cut_windows(tok, 64)


def test_sampler_sees_every_window_once_per_epoch():
    s = BatchSampler(torch.arange(12)[:, None], batch_size=4, seed=0)
    seen = torch.cat([s.next() for _ in range(3)]).flatten().sort().values
    assert seen.tolist() == list(range(12))


def test_prepare_without_text_or_tokenizer_says_how_to_give_text():
    with pytest.raises(CompressionError, match="calibration"):
        prepare(RunContext(), None, 16, 2, 2)


def test_training_reports_every_step_and_stops_on_cancel():
    torch.manual_seed(0)
    lin = nn.Linear(4, 1)
    data = torch.randn(16, 4)
    target = data @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    sampler = BatchSampler(torch.arange(16)[:, None], 4)
    loss = lambda idx: (lin(data[idx[:, 0]]).squeeze(-1) - target[idx[:, 0]]).pow(2).mean()  # noqa: E731
    seen = []
    ctx = RunContext(progress=lambda s, f, m="": seen.append(f))
    log = train(lin.parameters(), loss, sampler, 60, 0.1, ctx, grad_clip=0)
    assert len(seen) == 60 and seen[-1] == 1.0 and log.losses[-1] < log.losses[0] / 10
    ctx2 = RunContext()
    ctx2.progress = lambda s, f, m="": ctx2.cancel_event.set() if f > 0.1 else None
    with pytest.raises(Cancelled):
        train(lin.parameters(), loss, sampler, 50, 0.1, ctx2)


def test_tied_embeddings_are_counted_once():
    from tests.compressors.tiny import tiny_model

    m = tiny_model("llama")
    assert n_params(m) == sum(p.numel() for p in m.parameters())  # parameters() already dedups ties
    assert n_params(m) < sum(p.numel() for p in m.state_dict().values())


@pytest.mark.parametrize(
    "cid, phase",
    [
        ("llm-pruner", "fine-tuning"),
        ("selective-distillation", "fine-tuning"),
        ("sparse-pretraining", "pre-training"),
    ],
)
def test_registered_with_phase_impact_and_needs(cid, phase):
    cls = all_compressors()[cid]
    assert cls.phase == phase and cls.impact == "static"
    assert cls.needs_calibration and cls.needs_gradients


@pytest.mark.parametrize("cid", ["llm-pruner", "selective-distillation", "sparse-pretraining"])
def test_estimates_grow_with_steps_and_hold_the_model_twice_or_more(cid):
    cls = all_compressors()[cid]
    comp = cls()
    few = comp.estimate(DEMO_SHAPE, cls.config_cls(steps=10))
    many = comp.estimate(DEMO_SHAPE, cls.config_cls(steps=100))
    assert many.seconds > few.seconds > 0
    assert few.peak_memory_bytes > DEMO_SHAPE.n_params * 4 * 1.5  # weights + gradients/teacher/optimizer
    assert few.peak_memory_bytes < 16 * 2**30


def test_llm_pruner_estimate_names_the_pruned_parameter_count():
    from compressors.methods.llm_pruner import LLMPrunerConfig, pruned_shape

    small = pruned_shape(DEMO_SHAPE, LLMPrunerConfig(head_ratio=0.34, mlp_ratio=0.25))
    assert (small.n_heads, small.n_kv_heads, small.intermediate_size) == (6, 3, 1152)
    assert 0.18 < 1 - small.n_params / DEMO_SHAPE.n_params < 0.22
