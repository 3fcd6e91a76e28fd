"""Every layer-wise compressor on tiny random Llama / OPT / GPT-2 models, through the registry."""

import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny import tiny_model

from compressors.base import Cancelled, ConfigError, ModelShape, RunContext, get_compressor
from compressors.layers import all_linear_layers
from compressors.packed import QuantizedLinear, SparseLinear, packed_modules
from compressors.packed_spqr import SpQRLinear

CASES = [
    ("rtn", {"bits": 4, "group_size": 32}, QuantizedLinear),
    ("gptq", {"bits": 4, "group_size": 32}, QuantizedLinear),
    ("gptq", {"bits": 3, "group_size": -1, "act_order": False, "true_sequential": False}, QuantizedLinear),
    ("spqr", {}, SpQRLinear),
    ("magnitude", {"sparsity": 0.5}, SparseLinear),
    ("wanda", {"pattern": "2:4"}, SparseLinear),
    ("sparsegpt", {"sparsity": 0.5}, SparseLinear),
]


def _calib(n=4, seq=48, seed=0):
    return torch.randint(0, 320, (n, seq), generator=torch.Generator().manual_seed(seed))


def _run(arch, cid, cfg, calib=None):
    model = tiny_model(arch)
    comp = get_compressor(cid)
    ctx = RunContext(calibration=_calib() if calib is None else calib)
    comp.compress(model, None, comp.config_cls.from_dict(cfg), ctx)
    return model, ctx


@pytest.mark.parametrize("arch", ["llama", "opt", "gpt2"])
@pytest.mark.parametrize("cid,cfg,packed", CASES, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(CASES)])
def test_every_block_linear_is_replaced_and_model_still_predicts(arch, cid, cfg, packed):
    ref_model = tiny_model(arch)
    x = _calib(1, 32, seed=5)
    with torch.no_grad():
        ref = ref_model(x).logits
    n_linear = len(all_linear_layers(ref_model))
    model, ctx = _run(arch, cid, cfg)
    layers = packed_modules(model)
    assert len(layers) == n_linear and all(isinstance(m, packed) for m in layers.values())
    with torch.no_grad():
        out = model(x).logits
    assert torch.isfinite(out).all()
    assert float((out - ref).norm() / ref.norm()) < 0.6
    assert ctx.log_lines  # progress was reported


def test_gptq_beats_rtn_on_a_tiny_llama_at_3_bits():
    calib = _calib(8, 64)
    x = calib[:2]
    ref_model = tiny_model("llama")
    with torch.no_grad():
        ref = ref_model(x).logits
    errs = {}
    runs = {
        "rtn": ("rtn", {}),
        # the default: act-order with static groups (the layout vLLM and llama.cpp load)
        "gptq": ("gptq", {}),
        # act-order with groups in permuted order (the GPTQ paper's best; Shrinkwise-only)
        "gptq-permuted": ("gptq", {"act_order": True, "static_groups": False}),
    }
    for key, (cid, extra) in runs.items():
        model, _ = _run("llama", cid, {"bits": 3, "group_size": 32, **extra}, calib)
        with torch.no_grad():
            errs[key] = float((model(x).logits - ref).norm())
    # Both orders must beat RTN clearly (locally 0.77x; a broken GPTQ lands near 1.0x). Which order wins
    # on a random tiny model is noise: the permuted one measured 0.77x here and 0.81x on CI's CPU, whose
    # floating-point kernels differ, so the test does not rank the two GPTQ variants against each other.
    assert errs["gptq-permuted"] < 0.88 * errs["rtn"], errs
    assert errs["gptq"] < 0.88 * errs["rtn"], errs


def test_sparsity_is_exact_and_two_four_valid_in_the_model():
    model, _ = _run("llama", "sparsegpt", {"sparsity": 0.5})
    for m in packed_modules(model).values():
        assert m.sparsity == pytest.approx(0.5, abs=0.01)
    model, _ = _run("llama", "magnitude", {"pattern": "2:4"})
    for m in packed_modules(model).values():
        w = m.dequantize()
        assert torch.all((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2)


def test_spqr_layers_round_trip_through_packed_state_and_report_paper_bits():
    model, _ = _run("llama", "spqr", {"bits": 3})
    comp_bits = []
    for m in packed_modules(model).values():
        again = SpQRLinear.from_packed(dict(m.packed_state()), m.meta())
        assert torch.equal(again.dequantize(), m.dequantize())
        comp_bits.append(m.paper_bits_per_param())
        assert m.paper_bits_per_param() >= 3.625
    assert max(comp_bits) < 5.0


def test_cancel_stops_a_calibrated_run():
    model = tiny_model("llama")
    ctx = RunContext(calibration=_calib(), cancel_event=threading.Event())
    ctx.cancel_event.set()
    comp = get_compressor("gptq")
    with pytest.raises(Cancelled):
        comp.compress(model, None, comp.config_cls(), ctx)


def test_missing_calibration_says_how_to_provide_it():
    comp = get_compressor("sparsegpt")
    with pytest.raises(Exception, match="calibration"):
        comp.compress(tiny_model("llama"), None, comp.config_cls(), RunContext())


@pytest.mark.parametrize(
    "cid,bad",
    [
        ("gptq", {"bits": 5}),
        ("gptq", {"group_size": 4}),
        ("gptq", {"percdamp": 2.0}),
        ("rtn", {"bits": 1}),
        ("spqr", {"beta1": 12}),
        ("magnitude", {"sparsity": 0.99}),
        ("wanda", {"pattern": "3:4"}),
        ("sparsegpt", {"blocksize": 4}),
    ],
)
def test_configs_reject_bad_values_naming_them(cid, bad):
    comp = get_compressor(cid)
    with pytest.raises(ConfigError, match=list(bad)[0]):
        comp.config_cls.from_dict(bad)


def test_flags_and_estimates():
    shape = ModelShape(
        n_params=134_515_008,
        n_layers=30,
        hidden_size=576,
        intermediate_size=1536,
        vocab_size=49152,
        n_heads=9,
        n_kv_heads=3,
    )
    for cid in ("rtn", "gptq", "spqr", "magnitude", "wanda", "sparsegpt"):
        comp = get_compressor(cid)
        assert comp.phase == "post-training" and comp.impact == "static"
        assert comp.needs_calibration == (cid not in ("rtn", "magnitude"))
        est = comp.estimate(shape, comp.config_cls())
        assert est.peak_memory_bytes > shape.n_params * 4 and est.seconds > 0
    assert (
        get_compressor("spqr").estimate(shape, get_compressor("spqr").config_cls()).seconds
        > get_compressor("rtn").estimate(shape, get_compressor("rtn").config_cls()).seconds
    )


@pytest.mark.parametrize(
    "cid,cfg",
    [
        ("gptq", {"bits": 3, "group_size": 32, "act_order": True}),
        ("spqr", {}),
        ("sparsegpt", {"pattern": "2:4"}),
    ],
)
def test_compressed_model_saves_packed_and_loads_back_identical(tmp_path, cid, cfg):
    from compressors.storage import load_packed, save_packed

    model, _ = _run("llama", cid, cfg)
    x = _calib(1, 24, seed=9)
    with torch.no_grad():
        ref = model(x).logits
    save_packed(model, None, tmp_path / "out", method=cid, config=cfg)
    again = load_packed(tmp_path / "out")
    with torch.no_grad():
        out = again(x).logits
    assert torch.allclose(out, ref, atol=1e-5)
    kinds = {type(m).__name__ for m in packed_modules(again).values()}
    assert kinds == {type(m).__name__ for m in packed_modules(model).values()}
