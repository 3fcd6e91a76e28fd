"""Quantization grids: codes in range, reconstruction error bounded by half a step, ragged groups."""

import pytest
import torch

from compressors.ops.quant_grid import (
    dequantize_groups,
    group_params,
    maxq_for,
    n_groups_for,
    quantize_rtn,
    row_params,
)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [False, True])
def test_rtn_codes_in_range_and_error_within_half_step(bits, sym):
    torch.manual_seed(0)
    w = torch.randn(16, 96)
    q, s, z = quantize_rtn(w, bits, group_size=32, sym=sym)
    assert q.dtype == torch.uint8 and int(q.max()) <= maxq_for(bits)
    assert s.shape == (16, 3)
    err = (dequantize_groups(q, s, z, 32) - w).abs()
    step = s.repeat_interleave(32, dim=1)
    assert torch.all(err <= step / 2 + 1e-5)


def test_group_size_that_does_not_divide_width_gives_short_last_group():
    torch.manual_seed(0)
    w = torch.randn(4, 576)
    assert n_groups_for(576, 128) == 5
    q, s, z = quantize_rtn(w, 4, group_size=128)
    assert s.shape == (4, 5)
    # the last group's range is fitted on its own 64 columns only
    s_last, _ = row_params(w[:, 512:], 4)
    assert torch.allclose(s[:, 4], s_last)
    assert (dequantize_groups(q, s, z, 128) - w).abs().max() < s.max()


def test_symmetric_zero_is_middle_code():
    w = torch.randn(3, 40)
    _, z = group_params(w, 4, 8, sym=True)
    assert torch.all(z == 8)


def test_all_zero_row_does_not_divide_by_zero():
    w = torch.zeros(2, 16)
    q, s, z = quantize_rtn(w, 4)
    assert torch.all(torch.isfinite(s)) and torch.all(dequantize_groups(q, s, z, 16) == 0)


def test_mse_clipping_lowers_error_at_low_bits_with_an_outlier():
    torch.manual_seed(0)
    w = torch.randn(32, 128)
    w[:, 0] = 12.0  # one extreme weight per row stretches the min/max range
    plain = (dequantize_groups(*quantize_rtn(w, 2), 128) - w).pow(2).sum()
    mse = (dequantize_groups(*quantize_rtn(w, 2, mse=True), 128) - w).pow(2).sum()
    assert mse < plain


def test_bad_bits_names_allowed_values():
    with pytest.raises(ValueError, match="choose one of"):
        maxq_for(9)
