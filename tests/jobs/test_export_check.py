"""The pre-run export rules (jobs.export_check): what blocks the compressed-tensors export, the nearest
group size that does not, and when a GGUF is re-quantized instead of carried over bit for bit."""

from __future__ import annotations

import pytest

from compressors.base import ModelShape
from jobs.export_check import check_exports, export_blockers, nearest_group_size, quantized_widths

SMOLLM2 = [576, 1536]  # SmolLM2-135M: hidden 576, intermediate 1536


def test_the_demo_models_widths_come_from_its_shape():
    shape = ModelShape(
        n_params=134_515_008,
        n_layers=30,
        hidden_size=576,
        intermediate_size=1536,
        vocab_size=49152,
        n_heads=9,
        n_kv_heads=3,
    )
    assert quantized_widths(shape) == SMOLLM2


@pytest.mark.parametrize(
    ("group_size", "widths", "expected"),
    [
        (128, SMOLLM2, 64),  # divisors of gcd 192 the kernels take: 32, 64; 64 is nearest
        (64, SMOLLM2, 64),
        (256, [4096, 11008], 128),  # gcd 256 is not a kernel size; 128 is
        (128, [96, 480], 32),  # gcd 96: of 32 and 96 only 32 is a kernel size
        (128, [40, 200], 40),  # gcd 40: no kernel size divides it, the nearest divisor >= 8 does
        (128, [7, 14], -1),  # nothing of at least 8 divides 7: per-channel
    ],
)
def test_nearest_group_size_divides_every_width(group_size, widths, expected):
    got = nearest_group_size(group_size, widths)
    assert got == expected
    if got != -1:
        assert all(w % got == 0 for w in widths)


def test_gptq_defaults_on_the_demo_model_are_blocked_by_the_group_size_only():
    # act-order defaults to static groups (the layout engines load), so only g=128 vs 576 blocks
    check = check_exports(SMOLLM2, "gptq", {"bits": 4, "group_size": 128, "act_order": True})
    assert len(check.blockers) == 1
    assert "Group size 128 does not divide the input width 576" in check.blockers[0]
    assert "Use g=64" in check.blockers[0]
    assert check.fixes == [("Use g=64", {"group_size": 64})]


def test_act_order_with_permuted_groups_is_blocked_with_both_reasons_and_fixes():
    cfg = {"bits": 4, "group_size": 128, "act_order": True, "static_groups": False}
    check = check_exports(SMOLLM2, "gptq", cfg)
    assert len(check.blockers) == 2
    assert "Act-order" in check.blockers[1]
    assert check.fixes == [("Use g=64", {"group_size": 64}), ("Use static groups", {"static_groups": True})]
    # with act-order's permutation the GGUF cannot keep the codes either
    assert len(check.notes) == 1 and "re-quantized" in check.notes[0] and "act-order" in check.notes[0]


def test_settings_the_exports_hold_have_no_blocker_and_no_note():
    for cfg in (
        {"bits": 4, "group_size": 64, "act_order": False},
        {"bits": 4, "group_size": 64, "act_order": True, "static_groups": True},
        {"bits": 8, "group_size": -1, "act_order": True},  # per-channel: no permutation is stored
    ):
        check = check_exports(SMOLLM2, "gptq", cfg)
        assert (check.blockers, check.notes, check.fixes) == ([], [], []), cfg
    assert export_blockers(SMOLLM2, "rtn", {"bits": 4, "group_size": 32}) == []


def test_gguf_is_re_quantized_for_groups_that_are_not_whole_blocks_or_other_bits():
    (note,) = check_exports(SMOLLM2, "rtn", {"bits": 4, "group_size": 48}).notes
    assert "groups of 48 are not whole 32-weight blocks" in note
    (note,) = check_exports(SMOLLM2, "rtn", {"bits": 3, "group_size": 64}).notes
    assert "3-bit codes" in note
    # g=48 divides both widths: compressed-tensors is fine, only the GGUF note remains
    assert export_blockers(SMOLLM2, "rtn", {"bits": 4, "group_size": 48}) == []


def test_methods_compressed_tensors_cannot_hold_are_said_before_the_run():
    assert "SpQR" in export_blockers(SMOLLM2, "spqr", {"bits": 3})[0]
    assert "sparse" in export_blockers(SMOLLM2, "wanda", {"sparsity": 0.5})[0]
    assert export_blockers(SMOLLM2, "cpu-inference", {}) == []


@pytest.mark.parametrize(
    ("compressor", "config"),
    [
        ("rtn", {"bits": 4, "group_size": 16}),  # 16 does not divide 72
        ("rtn", {"bits": 4, "group_size": 8}),
        ("gptq", {"bits": 4, "group_size": 8, "act_order": True}),
        ("gptq", {"bits": 4, "group_size": 8, "act_order": True, "static_groups": True}),
        ("gptq", {"bits": 4, "group_size": -1, "act_order": True}),
    ],
)
def test_the_rules_agree_with_the_exporter(compressor, config, tmp_path):
    """A blocker is said before the run exactly when the exporter refuses the result after it."""
    import torch

    from compressors.base import RunContext, get_compressor
    from compressors.export import ExportUnsupported, export_compressed_tensors
    from compressors.models import model_shape
    from tests.compressors.tiny import tiny_model

    model = tiny_model("llama")
    widths = quantized_widths(model_shape(model.config))
    assert widths == [72, 136]
    comp = get_compressor(compressor)
    calib = torch.randint(0, 300, (4, 32), generator=torch.Generator().manual_seed(0))
    comp.compress(model, None, comp.config_cls.from_dict(config), RunContext(calibration=calib))
    try:
        export_compressed_tensors(model, None, tmp_path)
        refused = False
    except ExportUnsupported:
        refused = True
    assert refused == bool(export_blockers(widths, compressor, config))
