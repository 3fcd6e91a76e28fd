"""SparseGPT, Wanda and magnitude masks: exact ratios, valid N:M, and who wins where."""

import pytest
import torch

from compressors.ops.magnitude import magnitude_mask
from compressors.ops.sparsegpt import sparsegpt_prune
from compressors.ops.wanda import wanda_mask


def _toy(out=32, inn=256, n=2048):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, inn, generator=g) @ (torch.randn(inn, inn, generator=g) / inn**0.5)
    X[:, :8] *= 20
    W = torch.randn(out, inn, generator=g) * 0.05
    return W, X, 2 * X.T @ X / n


def _valid_nm(mask, n, m):
    rows, cols = mask.shape
    return bool(torch.all(mask.reshape(rows, cols // m, m).sum(-1) == n))


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_unstructured_ratios_are_exact(ratio):
    W, X, H = _toy()
    k = round(W.numel() * ratio)
    assert int(magnitude_mask(W, ratio).sum()) == k
    wm = wanda_mask(W, (X**2).mean(0), ratio)  # per row: every row loses round(256 * ratio)
    assert torch.all(wm.sum(1) == round(256 * ratio))
    r = sparsegpt_prune(W, H, ratio)
    assert int(r.mask.sum()) == k and torch.all(r.weight[r.mask] == 0)


def test_two_four_masks_are_valid():
    W, X, H = _toy()
    assert _valid_nm(magnitude_mask(W, prune_n=2, prune_m=4), 2, 4)
    assert _valid_nm(wanda_mask(W, (X**2).mean(0), prune_n=2, prune_m=4), 2, 4)
    r = sparsegpt_prune(W, H, prune_n=2, prune_m=4)
    assert _valid_nm(r.mask, 2, 4) and torch.all(r.weight[r.mask] == 0)


def test_wanda_beats_magnitude_when_inputs_have_outlier_features():
    W, X, H = _toy()
    err = lambda Wh: float(((X @ (Wh - W).T) ** 2).mean())  # noqa: E731
    mag = err(W * ~magnitude_mask(W, 0.5))
    wan = err(W * ~wanda_mask(W, (X**2).mean(0), 0.5))
    sgpt = err(sparsegpt_prune(W, H, 0.5).weight)
    assert wan < 0.5 * mag
    assert sgpt < wan  # the weight update buys more than a better mask alone


def test_sparsegpt_24_beats_magnitude_24():
    W, X, H = _toy()
    err = lambda Wh: float(((X @ (Wh - W).T) ** 2).mean())  # noqa: E731
    assert err(sparsegpt_prune(W, H, prune_n=2, prune_m=4).weight) < 0.5 * err(
        W * ~magnitude_mask(W, prune_n=2, prune_m=4)
    )
