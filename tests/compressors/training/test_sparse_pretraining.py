"""Sparse continued pre-training: the one-shot mask stays fixed through training, the weights that
remain do change, and the result is stored sparse (SparseLinear) and reloads through Shrinkwise storage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressors.base import ConfigError, RunContext, get_compressor
from compressors.layers import get_weight, iter_block_linears
from compressors.methods.sparse_pretraining import SparsePretraining, SparsePretrainingConfig
from compressors.packed import SparseLinear
from compressors.training import masked
from tests.compressors.tiny import tiny_model, tiny_tokenizer

CALIB = torch.randint(0, 320, (8, 32), generator=torch.Generator().manual_seed(2))


def test_fixed_mask_keeps_pruned_weights_zero_under_a_large_learning_rate():
    torch.manual_seed(0)
    lin = nn.Linear(8, 4)
    mask = torch.rand(4, 8) > 0.5
    fixed = masked.FixedMask({"l": lin}, {"l": mask})
    opt = torch.optim.AdamW(lin.parameters(), lr=1.0, weight_decay=0.1)
    before = lin.weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        lin(torch.randn(5, 8)).pow(2).sum().backward()
        assert (lin.weight.grad[~mask] == 0).all()  # the gradient hook masks before the optimizer
        opt.step()
        fixed.apply()
    assert (lin.weight[~mask] == 0).all()
    assert (lin.weight[mask] != before[mask]).all()


def _one_shot_masks(arch: str) -> dict[str, torch.Tensor]:
    model = tiny_model(arch)
    comp = get_compressor("magnitude")
    comp.compress(model, None, comp.config_cls(sparsity=0.5), RunContext())
    return {f"{bi}.{name}": get_weight(m) != 0 for bi, name, m in iter_block_linears(model)}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_mask_stays_the_one_shot_mask_after_training_and_kept_weights_change(arch):
    expected = _one_shot_masks(arch)
    model = tiny_model(arch)
    oneshot = tiny_model(arch)
    comp = get_compressor("magnitude")
    comp.compress(oneshot, None, comp.config_cls(sparsity=0.5), RunContext())
    sp = SparsePretraining()
    cfg = SparsePretrainingConfig(
        steps=2, lr=1e-2, seq_len=16, batch_size=2, val_windows=2, one_shot="magnitude"
    )
    out = sp.compress(model, tiny_tokenizer(), cfg, RunContext(calibration=CALIB))
    changed = 0
    trained = dict(((bi, n), m) for bi, n, m in iter_block_linears(out))
    for bi, name, m in iter_block_linears(oneshot):
        t = trained[(bi, name)]
        assert isinstance(t, SparseLinear)
        w = t.dequantize()
        assert torch.equal(w != 0, expected[f"{bi}.{name}"]), f"mask of {bi}.{name} moved"
        changed += int((w != m.dequantize()).any())
    assert changed == len(trained)
    assert sp.last_report["mask_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert sp.last_report["training"]["steps"] == 2


def test_2_4_pattern_is_kept_and_saved_sparse(tmp_path):
    from compressors.storage import load_packed, save_packed

    model = tiny_model("mistral")
    cfg = SparsePretrainingConfig(
        steps=1, seq_len=16, batch_size=2, val_windows=2, pattern="2:4", one_shot="magnitude"
    )
    out = SparsePretraining().compress(model, tiny_tokenizer(), cfg, RunContext(calibration=CALIB))
    layers = [m for m in out.modules() if isinstance(m, SparseLinear)]
    assert layers and all(m.pattern == "2:4" for m in layers)
    save_packed(out, tiny_tokenizer(), tmp_path / "m", method="sparse-pretraining", config=cfg.to_dict())
    back = load_packed(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(back(CALIB[:2]).logits, out(CALIB[:2]).logits)


def test_cancellation_stops_training_within_a_step():
    from compressors.base import Cancelled

    ctx = RunContext(calibration=CALIB)
    calls = []

    def progress(stage, frac, msg=""):
        calls.append(stage)
        if stage == "sparse-train":
            ctx.cancel_event.set()

    ctx.progress = progress
    cfg = SparsePretrainingConfig(steps=50, seq_len=16, batch_size=2, val_windows=2, one_shot="magnitude")
    with pytest.raises(Cancelled):
        SparsePretraining().compress(tiny_model("llama"), tiny_tokenizer(), cfg, ctx)
    assert calls.count("sparse-train") == 1


@pytest.mark.parametrize(
    "bad",
    [
        dict(sparsity=0.99),
        dict(pattern="1:3"),
        dict(one_shot="random"),
        dict(seq_len=4),
        dict(weight_decay=2.0),
    ],
)
def test_config_rejects_bad_values_naming_them(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        SparsePretrainingConfig(**bad)
