"""The throughput probe and the estimates built on it: operation counts divided by measured rates.

No assertion here depends on how fast this machine is: the probe's numbers are faked wherever an
estimate is checked, and the one real probe run only checks that it returns usable rates.
"""

from __future__ import annotations

import json
import math

import pytest

from compressors import throughput
from compressors.base import ModelShape
from compressors.methods.layerwise import block_layer_shapes, layerwise_estimate, layerwise_work
from compressors.throughput import Throughput, Work, get_throughput
from compressors.training.loop import STEP_OPS_PER_LAYER, eval_seconds, step_seconds

TINY = ModelShape(
    n_params=200_000,
    n_layers=2,
    hidden_size=64,
    intermediate_size=128,
    vocab_size=100,
    n_heads=4,
    n_kv_heads=2,
)
FAKE_RATES = {
    "matmul_fp32": 1e9,
    "matmul_bf16": 4e9,
    "factor_fp32": 5e8,
    "bandwidth": 2e9,
    "op_overhead_s": 1e-5,
}
INF = math.inf


def only(**rates: float) -> Throughput:
    """A throughput where every kind of work not named is free (infinite rate, no overhead)."""
    base = {
        "matmul_fp32": INF,
        "matmul_bf16": INF,
        "factor_fp32": INF,
        "bandwidth": INF,
        "op_overhead_s": 0.0,
    }
    return Throughput(**{**base, **rates}, device="cpu", source="fake")


@pytest.fixture
def probe_calls(monkeypatch, tmp_path):
    """Unpin the rates, point the cache at ``tmp_path`` and count probe runs (which return FAKE_RATES)."""
    monkeypatch.delenv(throughput.ENV_PIN, raising=False)
    monkeypatch.setenv("SHRINKWISE_CACHE", str(tmp_path))
    calls: list[str] = []

    def fake_probe(device: str) -> dict[str, float]:
        calls.append(device)
        return dict(FAKE_RATES)

    monkeypatch.setattr(throughput, "_probe", fake_probe)
    monkeypatch.setattr(throughput, "machine_load", lambda: 0.5)  # an idle machine, whatever this one is
    throughput.clear_memo()
    yield calls
    throughput.clear_memo()


# --- the probe and its cache ------------------------------------------------------------------------


def test_probe_runs_once_then_is_reused_from_memory_and_from_the_cache_file(probe_calls, tmp_path):
    first = get_throughput("cpu")
    assert probe_calls == ["cpu"]
    assert first.matmul_fp32 == FAKE_RATES["matmul_fp32"]
    assert get_throughput("cpu") is first  # in-process copy
    throughput.clear_memo()  # a new process: reads the file, does not probe
    again = get_throughput("cpu")
    assert probe_calls == ["cpu"]
    assert again.matmul_fp32 == first.matmul_fp32
    files = list((tmp_path / "throughput").glob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["key"] == throughput.machine_key("cpu")
    assert f"cached at {files[0]}" in again.source and "measured on this machine" in again.source


def test_a_changed_key_re_runs_the_probe(probe_calls, monkeypatch, tmp_path):
    get_throughput("cpu")
    monkeypatch.setattr(throughput.torch, "get_num_threads", lambda: 97)
    get_throughput("cpu")
    assert len(probe_calls) == 2
    monkeypatch.setattr(throughput.torch, "__version__", "0.0.0-other")
    get_throughput("cpu")
    assert len(probe_calls) == 3
    assert len(list((tmp_path / "throughput").glob("*.json"))) == 3
    get_throughput("cpu")  # same key as the last one: cached
    assert len(probe_calls) == 3


def test_a_cache_file_for_another_key_is_ignored_and_refresh_re_probes(probe_calls):
    key = throughput.machine_key("cpu")
    path = throughput.cache_path(key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": {**key, "host": "elsewhere"}, "rates": {}, "measured_at": "then"}))
    get_throughput("cpu")
    assert len(probe_calls) == 1
    get_throughput("cpu", refresh=True)
    assert len(probe_calls) == 2


def test_a_probe_on_a_busy_machine_is_not_cached(probe_calls, monkeypatch, tmp_path):
    monkeypatch.setattr(throughput, "machine_load", lambda: 4.0)
    tp = get_throughput("cpu")
    assert "not cached" in tp.source and "busy" in tp.source
    assert not (tmp_path / "throughput").exists()
    throughput.clear_memo()
    get_throughput("cpu")  # the next process measures again, hopefully on a quieter machine
    assert len(probe_calls) == 2
    assert "busy now" in tp.describe()


def test_pinned_rates_skip_the_probe(probe_calls, monkeypatch):
    monkeypatch.setenv(throughput.ENV_PIN, json.dumps(FAKE_RATES))
    tp = get_throughput("cpu")
    assert probe_calls == [] and tp.bandwidth == FAKE_RATES["bandwidth"] and "pinned" in tp.source
    monkeypatch.setenv(throughput.ENV_PIN, json.dumps({"matmul_fp32": 1.0}))
    with pytest.raises(ValueError, match="missing"):
        get_throughput("cpu")


def test_the_real_probe_returns_positive_finite_rates():
    rates = throughput.measure("cpu", budget_s=0.005)
    assert set(rates) == set(FAKE_RATES)
    assert all(0 < v < INF for v in rates.values())


# --- estimates: operation counts / rates ------------------------------------------------------------


def test_gptq_estimate_on_a_tiny_model_is_its_operation_count_over_the_fake_throughput():
    samples, seq = 4, 32
    tokens = samples * seq
    layers = block_layer_shapes(TINY)
    block = sum(o * d for o, d in layers)
    L = TINY.n_layers
    # matmuls: 2.5 calibration passes (2·tokens·params + attention 4·tokens·seq·hidden), the Hessians
    # 2·tokens·d², the lazy column-sweep updates o·d²
    flops = L * (
        2.5 * (2 * tokens * block + 4 * tokens * seq * TINY.hidden_size)
        + sum(2 * tokens * d * d for _, d in layers)
        + sum(o * d * d for o, d in layers)
    )
    est = layerwise_estimate(TINY, "gptq", samples, seq, group_size=32, throughput=only(matmul_fp32=1e9))
    assert est.seconds == pytest.approx(flops / 1e9)
    factor = L * sum(4 / 3 * d**3 for _, d in layers)
    est = layerwise_estimate(TINY, "gptq", samples, seq, group_size=32, throughput=only(factor_fp32=5e8))
    assert est.seconds == pytest.approx(factor / 5e8)
    # and all kinds at once: the sum of every stage's work over the full fake throughput
    tp = Throughput(**FAKE_RATES)
    work = sum(layerwise_work(TINY, "gptq", samples, seq, 32).values(), Work())
    assert layerwise_estimate(TINY, "gptq", samples, seq, 32, throughput=tp).seconds == pytest.approx(
        work.matmul_flops / 1e9
        + work.matmul_flops_half / 4e9
        + work.factor_flops / 5e8
        + work.bytes_moved / 2e9
        + work.small_ops * 1e-5
    )


def test_rtn_estimate_is_its_weight_passes_over_the_bandwidth():
    weights = TINY.n_layers * sum(o * d for o, d in block_layer_shapes(TINY))
    est = layerwise_estimate(TINY, "rtn", throughput=only(bandwidth=2e9))
    assert est.seconds == pytest.approx(16 * 8 * weights / 2e9)


def test_doubling_calibration_windows_doubles_calibration_time_not_the_solve():
    one = layerwise_work(TINY, "gptq", calib_samples=8, calib_seq=64)
    two = layerwise_work(TINY, "gptq", calib_samples=16, calib_seq=64)
    tp = Throughput(**FAKE_RATES)
    for stage in ("calibration passes", "hessians"):
        assert two[stage].seconds(tp) == pytest.approx(2 * one[stage].seconds(tp))
    for stage in ("inverse Cholesky", "column sweep", "weights"):
        assert two[stage] == one[stage]
    fast = only(matmul_fp32=1e9)
    e1 = layerwise_estimate(TINY, "wanda", 8, 64, throughput=fast).seconds
    e2 = layerwise_estimate(TINY, "wanda", 16, 64, throughput=fast).seconds
    assert e2 == pytest.approx(2 * e1)


def test_gptq_inverse_grows_with_the_cube_of_the_layer_width():
    wide = ModelShape(**{**TINY.__dict__, "intermediate_size": 2 * TINY.intermediate_size})
    narrow_w = layerwise_work(TINY, "gptq")["inverse Cholesky"].factor_flops
    wide_w = layerwise_work(wide, "gptq")["inverse Cholesky"].factor_flops
    i = TINY.intermediate_size
    assert wide_w - narrow_w == pytest.approx(TINY.n_layers * 4 / 3 * ((2 * i) ** 3 - i**3))


def test_group_size_adds_grid_ops_to_quantizers_only():
    per_channel = layerwise_work(TINY, "gptq", group_size=-1)["weights"].small_ops
    grouped = layerwise_work(TINY, "gptq", group_size=16)["weights"].small_ops
    assert grouped > per_channel
    assert layerwise_work(TINY, "magnitude", group_size=16) == layerwise_work(TINY, "magnitude")


def test_estimates_state_their_uncertainty_and_the_throughput_they_used():
    est = layerwise_estimate(
        TINY, "gptq", throughput=Throughput(**FAKE_RATES, source="measured, cached at X")
    )
    low, high = est.seconds_range
    assert low < est.seconds < high and est.uncertainty > 1
    assert "1 GFLOP/s fp32" in est.basis and "cached at X" in est.basis
    assert "column sweep" in est.note  # the split by stage


def test_training_step_and_eval_times_are_flops_over_the_measured_rate():
    tp = only(matmul_fp32=1e9, op_overhead_s=1e-5)
    n, tokens, trained = TINY.n_params, 256, 1000
    expected = tokens * (4 * n + 2 * trained) / 1e9 + STEP_OPS_PER_LAYER * TINY.n_layers * 1e-5
    assert step_seconds(TINY, tokens, trained, throughput=tp) == pytest.approx(expected)
    assert eval_seconds(TINY, 512, throughput=tp) == pytest.approx(2 * n * 512 / 1e9)
    assert eval_seconds(TINY, 1024, throughput=tp) == pytest.approx(
        2 * eval_seconds(TINY, 512, throughput=tp)
    )
    half = ModelShape(**{**TINY.__dict__, "dtype_bytes": 2})
    assert eval_seconds(half, 512, throughput=only(matmul_bf16=4e9)) == pytest.approx(2 * n * 512 / 4e9)
