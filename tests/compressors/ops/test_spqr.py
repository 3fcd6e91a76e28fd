"""SpQR: bit count as the paper counts it, outliers stored in CSR, better than plain 3-bit."""

import math

import torch

from compressors.ops.quant_grid import dequantize_groups, quantize_rtn
from compressors.ops.spqr import quantize_stat_column, spqr_bits_per_param, spqr_quantize


def test_bits_formula_matches_paper_figure():
    # evidence.md: 3-bit weights with beta1 = beta2 = 16 give 3.625 bits before outliers
    assert spqr_bits_per_param(3, 3, 16, 16, 0.0) == 3.625
    assert math.isclose(spqr_bits_per_param(3, 3, 16, 16, 0.01), 3.945)


def test_stat_quantization_reconstructs_from_fp16_stats():
    v = torch.rand(40) + 0.1  # 40 rows: chunks of 16, 16, 8
    codes, stats, rec = quantize_stat_column(v, 3, 16)
    assert stats.dtype == torch.float16 and stats.shape == (3, 2)
    assert int(codes.max()) <= 7
    s = stats[:, 0].float().repeat_interleave(16)[:40]
    z = stats[:, 1].float().repeat_interleave(16)[:40]
    assert torch.allclose(rec, s * (codes.float() - z))
    assert (rec - v).abs().max() <= s.max() / 2 + 1e-4


def _toy():
    g = torch.Generator().manual_seed(1)
    inn, n = 128, 2048
    X = torch.randn(n, inn, generator=g) @ (torch.randn(inn, inn, generator=g) / inn**0.5)
    W = torch.randn(64, inn, generator=g) * 0.05
    W[torch.rand(W.shape, generator=g) < 0.005] *= 30  # a few large weights
    return W, X, 2 * X.T @ X / n


def test_outliers_kept_in_csr_and_error_below_rtn():
    W, X, H = _toy()
    r = spqr_quantize(W, H, bits=3, outlier_threshold=0.2)
    assert 0 < r.outlier_fraction < 0.05
    nnz = int(r.row_ptr[-1])
    assert nnz == r.values.numel() == r.col_idx.numel()
    rows = torch.repeat_interleave(torch.arange(64), r.row_ptr[1:] - r.row_ptr[:-1])
    assert torch.equal(r.dequantized[rows, r.col_idx], r.values.float())
    assert math.isclose(r.bits_per_param, spqr_bits_per_param(3, 3, 16, 16, nnz / W.numel()))
    rtn = dequantize_groups(*quantize_rtn(W, 3, 16), 16)
    err = lambda Wh: float(((X @ (Wh - W).T) ** 2).mean())  # noqa: E731
    assert err(r.dequantized) < 0.5 * err(rtn)
    no_out = spqr_quantize(W, H, bits=3, outlier_threshold=float("inf"))
    assert no_out.outlier_fraction == 0 and err(r.dequantized) < err(no_out.dequantized)


def test_codes_and_quantized_stats_reproduce_the_weight():
    W, X, H = _toy()
    r = spqr_quantize(W, H, bits=3)
    deq = dequantize_groups(r.codes, r.scale.values, r.zero.values, 16)[:, torch.argsort(r.perm)]
    rows = torch.repeat_interleave(torch.arange(64), r.row_ptr[1:] - r.row_ptr[:-1])
    deq[rows, r.col_idx] = r.values.float()
    assert torch.allclose(deq, r.dequantized, atol=1e-5)
