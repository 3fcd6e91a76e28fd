"""Bit packing round trips and the packed layer types (quantized, sparse) against plain formulas."""

import pytest
import torch

from compressors.packed import (
    QuantizedLinear,
    SparseLinear,
    get_packed_type,
    pack_bits,
    packed_words,
    unpack_bits,
)
from tests.compressors.tiny import rtn_codes


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(1,), (31,), (32,), (33,), (7, 45), (64, 72)])
def test_pack_unpack_round_trip(bits, shape):
    g = torch.Generator().manual_seed(bits * 100 + len(shape))
    q = torch.randint(0, 2**bits, shape, generator=g)
    packed = pack_bits(q, bits)
    assert packed.dtype == torch.int32
    assert packed.numel() == packed_words(q.numel(), bits)
    assert torch.equal(unpack_bits(packed, bits, shape).long(), q)


def test_three_bit_values_are_packed_densely_across_words():
    q = torch.arange(32) % 8
    packed = pack_bits(q, 3)
    assert packed.numel() == 3  # 96 bits, not 4 words as 4-bit padding would need
    # value 10 (=2) starts at bit 30 of word 0 and spills into word 1
    stream = sum((int(w) & 0xFFFFFFFF) << (32 * i) for i, w in enumerate(packed))
    assert [(stream >> (3 * i)) & 7 for i in range(32)] == q.tolist()


def test_four_bit_packs_eight_values_per_word_little_endian():
    packed = pack_bits(torch.tensor([1, 2, 3, 4, 5, 6, 7, 15] * 4), 4)
    assert packed.numel() == 4
    assert int(packed[0]) & 0xFFFFFFFF == 0xF7654321


def test_pack_rejects_out_of_range_and_unsupported_bits():
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        pack_bits(torch.tensor([8]), 3)
    with pytest.raises(ValueError, match="bits=5"):
        pack_bits(torch.tensor([1]), 5)


@pytest.mark.parametrize("bits,group_size", [(4, 32), (3, 32), (2, 16), (8, -1), (4, 128)])
def test_quantized_linear_dequantizes_to_the_rtn_formula_with_a_short_last_group(bits, group_size):
    torch.manual_seed(0)
    w = torch.randn(24, 72)  # 72 = 2 groups of 32 + one of 8
    q, s, z = rtn_codes(w, bits, group_size)
    layer = QuantizedLinear.from_quantized(q, s, z, bits, group_size)
    gs = 72 if group_size == -1 else group_size
    g = torch.arange(72) // gs
    expected = (q.float() - z[:, g]) * s.half().float()[:, g]
    assert torch.allclose(layer.dequantize(), expected)
    assert torch.equal(layer.codes().long(), q)
    x = torch.randn(3, 72)
    assert torch.allclose(layer(x), x @ expected.t(), atol=1e-5)
    # bits: packed codes + fp16 scales + packed integer zeros
    n_groups = s.shape[1]
    assert (
        layer.stored_bits()
        == packed_words(24 * 72, bits) * 32 + 24 * n_groups * 16 + packed_words(24 * n_groups, bits) * 32
    )


def test_symmetric_zero_is_stored_once_not_per_group():
    torch.manual_seed(1)
    w = torch.randn(16, 64)
    q, s, z = rtn_codes(w, 4, 32, symmetric=True)
    layer = QuantizedLinear.from_quantized(q, s, z, 4, 32, symmetric=True)
    assert layer.zeros is None and layer.zero_const == 8.0
    assert layer.stored_bits() == 16 * 64 * 4 + 16 * 2 * 16
    assert layer.bits_per_weight() == pytest.approx(4.5)


def test_act_order_permutation_assigns_groups_in_quantization_order():
    torch.manual_seed(2)
    in_f, gs = 40, 16
    perm = torch.randperm(in_f)
    q = torch.randint(0, 16, (8, in_f))
    s = torch.rand(8, 3) + 0.1
    z = torch.randint(0, 16, (8, 3)).float()
    layer = QuantizedLinear.from_quantized(q, s, z, 4, gs, perm=perm)
    g = torch.empty(in_f, dtype=torch.long)
    g[perm] = torch.arange(in_f) // gs
    assert torch.equal(layer.group_index(), g)
    expected = (q.float() - z[:, g]) * s.half().float()[:, g]
    assert torch.allclose(layer.dequantize(), expected)
    rebuilt = QuantizedLinear.from_packed(layer.packed_state(), layer.meta())
    assert torch.equal(rebuilt.dequantize(), layer.dequantize())


def test_quantized_linear_rejects_wrong_scale_shape():
    with pytest.raises(ValueError, match=r"scale must be \[4, 3\]"):
        QuantizedLinear.from_quantized(torch.zeros(4, 72, dtype=torch.long), torch.ones(4, 2), 0, 4, 32)


def test_unstructured_sparse_linear_round_trip_and_bits():
    torch.manual_seed(3)
    w = torch.randn(32, 64)
    w[torch.rand_like(w) < 0.5] = 0
    layer = SparseLinear.from_dense(w, pattern="unstructured")
    assert torch.allclose(layer.dequantize(), w.half().float())
    nnz = int((w != 0).sum())
    assert layer.nnz == nnz and layer.sparsity == pytest.approx(1 - nnz / w.numel())
    assert layer.stored_bits() == 32 * 64 + nnz * 16  # 1-bit mask + fp16 values


def test_two_four_sparse_linear_round_trip_and_bits():
    torch.manual_seed(4)
    w = torch.randn(8, 64)
    runs = w.view(8, 16, 4)
    drop = runs.abs().argsort(-1)[..., :2]
    runs.scatter_(-1, drop, 0.0)
    layer = SparseLinear.from_dense(w, pattern="2:4")
    assert torch.allclose(layer.dequantize(), w.half().float())
    assert layer.stored_bits() == (8 * 64 // 2) * 16 + packed_words(8 * 64 // 2, 2) * 32
    assert layer.bits_per_weight() == pytest.approx(9.0)
    rebuilt = get_packed_type("sparse_linear").from_packed(layer.packed_state(), layer.meta())
    assert torch.equal(rebuilt.dequantize(), layer.dequantize())


def test_two_four_rejects_a_dense_run():
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        SparseLinear.from_dense(torch.ones(2, 8), pattern="2:4")


def test_unknown_packed_type_lists_known_ones():
    with pytest.raises(KeyError, match="quantized_linear"):
        get_packed_type("nope")
