"""TEAL on tiny random models of every linear-layer flavour (Llama, Qwen2, Mistral, GPT-2 Conv1D, OPT):
exact at sparsity 0, the calibrated sparsity is reached, the masked layer equals its definition, the
sparse kernels equal the dense product, weights stay untouched, and the record reloads."""

from __future__ import annotations

import pytest
import torch

from compressors.base import ConfigError, RunContext, get_compressor
from compressors.dynamic import manifest
from compressors.dynamic.sparse_kernel import load_kernel, sparse_matvec_torch
from compressors.dynamic.teal import (
    block_linears,
    calibrate_thresholds,
    install_teal,
    installed_states,
    measured_sparsity,
    set_counting,
    skipped_flops_fraction,
    uninstall_teal,
)
from compressors.layers import get_weight
from compressors.methods.teal import TEALConfig
from tests.compressors.tiny import VOCAB, tiny_model

ARCHS = ["llama", "qwen2", "mistral", "gpt2", "opt"]


def _tokens(n=4, seq=32, seed=0):
    return torch.randint(1, VOCAB, (n, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_sparsity_zero_is_exactly_the_model(arch):
    model = tiny_model(arch)
    ids = _tokens(1, 24, seed=5)
    ref = model(ids).logits
    ctx = RunContext(calibration=_tokens())
    get_compressor("teal").compress(model, None, TEALConfig(sparsity=0.0, kernel="torch"), ctx)
    assert installed_states(model) == {}  # a zero threshold leaves the original forward
    assert torch.equal(model(ids).logits, ref)


@pytest.mark.parametrize("arch", ARCHS)
@torch.no_grad()
def test_calibrated_thresholds_reach_the_target_sparsity_and_leave_weights_untouched(arch):
    model = tiny_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = _tokens(1, 24, seed=5)
    ref = model(ids).logits
    ctx = RunContext(calibration=_tokens())
    get_compressor("teal").compress(
        model, None, TEALConfig(sparsity=0.5, kernel="torch", calib_samples=4), ctx
    )
    assert len(installed_states(model)) == len(block_linears(model))
    set_counting(model, True)
    out = model(_tokens(4, 32, seed=0)).logits  # the calibration text itself: quantiles are exact there
    if arch == "opt":  # fc2 reads a ReLU output: more than half of it is exactly zero already
        assert measured_sparsity(model) >= 0.5 - 0.02
    else:
        assert measured_sparsity(model) == pytest.approx(0.5, abs=0.02)
        assert skipped_flops_fraction(model) == pytest.approx(0.5, abs=0.03)
    assert not torch.allclose(model(ids).logits, ref)  # it does change the outputs
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    uninstall_teal(model)
    assert torch.equal(model(ids).logits, ref)
    del out


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@torch.no_grad()
def test_installed_layer_equals_the_masked_dense_product(arch):
    model = tiny_model(arch)
    name, layer = next(iter(block_linears(model).items()))
    install_teal(model, {name: 0.5}, kernel="torch")
    x = torch.randn(3, 5, get_weight(layer).shape[1])
    masked = x * (x.abs() > 0.5)
    w = get_weight(layer)
    b = getattr(layer, "bias", None)
    expected = masked @ w.t() + (b if b is not None else 0)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_torch_sparse_matvec_equals_the_masked_product():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(48, 40, generator=g)
    x = torch.randn(40, generator=g)
    expected = w @ (x * (x.abs() > 0.7))
    assert torch.allclose(sparse_matvec_torch(x, w.t().contiguous(), 0.7), expected, atol=1e-5)


@pytest.mark.slow
@torch.no_grad()
def test_cpp_kernel_equals_the_masked_product_and_is_used_for_one_token():
    kernel = load_kernel()  # compiles once (~45 s on this machine), then cached by torch
    if kernel is None:
        pytest.skip("no C++ toolchain for the TEAL kernel")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 72, generator=g)
    x = torch.randn(72, generator=g)
    for t in (0.0, 0.3, 1.0, 10.0):
        expected = w @ (x * (x.abs() > t))
        assert torch.allclose(kernel.sparse_rows_matvec(x, w.t().contiguous(), t), expected, atol=1e-5)
    for arch in ("llama", "gpt2"):
        model = tiny_model(arch)
        name, layer = next(iter(block_linears(model).items()))
        install_teal(model, {name: 0.4}, kernel="cpp")
        assert installed_states(model)[name].wt is not None
        xi = torch.randn(1, 1, get_weight(layer).shape[1])
        b = getattr(layer, "bias", None)
        expected = (xi * (xi.abs() > 0.4)) @ get_weight(layer).t() + (b if b is not None else 0)
        assert torch.allclose(layer(xi), expected, atol=1e-5)


@torch.no_grad()
def test_thresholds_are_quantiles_of_the_inputs():
    model = tiny_model("llama")
    toks = _tokens(2, 16)
    th25 = calibrate_thresholds(model, [toks], 0.25)
    th50 = calibrate_thresholds(model, [toks], 0.5)
    assert set(th25) == set(block_linears(model))
    assert all(0 < th25[k] < th50[k] for k in th25)
    # q, k and v read the same input: same threshold
    qkv = [
        th50[k]
        for k in th50
        if k.startswith("model.layers.0.self_attn.") and k[-6:] in ("q_proj", "k_proj", "v_proj")
    ]
    assert len(qkv) == 3 and max(qkv) == min(qkv)


@torch.no_grad()
def test_saved_teal_checkpoint_reloads_with_its_thresholds(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_model("llama")
    ctx = RunContext(calibration=_tokens())
    get_compressor("teal").compress(
        model, None, TEALConfig(sparsity=0.4, kernel="torch", calib_samples=4), ctx
    )
    ids = _tokens(1, 20, seed=9)
    expected = model(ids).logits
    model.save_pretrained(tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert manifest.dynamic_section(plain)["method"] == "teal"
    assert manifest.reinstall(plain)
    assert torch.allclose(plain(ids).logits, expected, atol=1e-6)


def test_teal_needs_calibration_and_validates_its_config():
    comp = get_compressor("teal")
    assert (comp.phase, comp.impact, comp.needs_calibration) == ("post-training", "dynamic", True)
    with pytest.raises(ConfigError, match="sparsity"):
        TEALConfig(sparsity=0.99)
    with pytest.raises(ConfigError, match="kernel"):
        TEALConfig(kernel="cuda")
    from compressors.base import CompressionError

    with pytest.raises(CompressionError, match="calibration"):
        comp.compress(tiny_model("llama"), None, TEALConfig(), RunContext())
