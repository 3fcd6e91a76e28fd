"""GPTQ beats round-to-nearest on correlated inputs; act-order and ragged groups reconstruct exactly."""

import pytest
import torch

from compressors.ops.gptq import gptq_quantize
from compressors.ops.quant_grid import dequantize_groups, quantize_rtn


def _toy(out=48, inn=160, n=2048, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(inn, inn, generator=g) / inn**0.5
    X = torch.randn(n, inn, generator=g) @ A + 0.3 * torch.randn(n, inn, generator=g)
    X[:, :4] *= 15  # a few outlier features, as in LLM activations
    W = torch.randn(out, inn, generator=g) * 0.05
    return W, X, 2 * X.T @ X / n


def _out_err(X, W, Wh):
    return float(((X @ (Wh - W).T) ** 2).mean())


def _codes_to_weight(r, width):
    rec = dequantize_groups(r.codes, r.scale, r.zero, r.group_size if r.group_size != -1 else width)
    if r.perm is not None:
        rec = rec[:, torch.argsort(r.perm)]
    return rec


@pytest.mark.parametrize("bits,gs", [(4, -1), (4, 32), (3, 32)])
def test_gptq_output_error_well_below_rtn(bits, gs):
    W, X, H = _toy()
    rtn = dequantize_groups(*quantize_rtn(W, bits, gs), gs if gs != -1 else W.shape[1])
    r = gptq_quantize(W, H, bits=bits, group_size=gs)
    assert _out_err(X, W, r.dequantized) < 0.6 * _out_err(X, W, rtn)


@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("gs", [-1, 32, 48])
def test_act_order_codes_reconstruct_the_returned_weight(static, gs):
    W, X, H = _toy(inn=160)
    r = gptq_quantize(W, H, bits=4, group_size=gs, act_order=True, static_groups=static)
    if static or gs == -1:
        assert r.perm is None
    else:
        assert sorted(r.perm.tolist()) == list(range(160))
    assert torch.allclose(_codes_to_weight(r, 160), r.dequantized, atol=1e-5)
    assert _out_err(X, W, r.dequantized) < _out_err(
        X, W, dequantize_groups(*quantize_rtn(W, 4, gs), gs if gs != -1 else 160)
    )


def test_group_size_not_dividing_width_gives_short_last_group():
    W, X, H = _toy(inn=160)
    r = gptq_quantize(W, H, bits=4, group_size=64)  # 64, 64, 32
    assert r.scale.shape == (48, 3)
    assert torch.allclose(_codes_to_weight(r, 160), r.dequantized, atol=1e-5)
    assert int(r.codes.max()) <= 15


def test_symmetric_grid_uses_middle_zero():
    W, X, H = _toy()
    r = gptq_quantize(W, H, bits=4, group_size=32, sym=True)
    assert torch.all(r.zero == 8)


def test_dead_input_column_gets_zero_weight():
    W, X, H = _toy(inn=64)
    H[5, :] = 0
    H[:, 5] = 0
    r = gptq_quantize(W, H, bits=4)
    assert torch.all(r.dequantized[:, 5].abs() <= r.scale[:, 0] / 2 + 1e-6)
