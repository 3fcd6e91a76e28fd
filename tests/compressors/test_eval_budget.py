"""The default before/after measurement is bounded by the compression (issue 12, "evaluation that
scales"): a pure choice from the model's shape, the device's throughput and the compression's estimate."""

from __future__ import annotations

import pytest

from compressors.base import Calibration, ModelShape
from compressors.eval_budget import CHEAP_SECONDS, LADDER, choose_eval_windows
from compressors.run import RUN_STAGES, estimate_stages, evaluate_work
from compressors.throughput import Throughput
from jobs import preflight

# round rates of a CPU like the development VM's (its probe: ~200 GFLOP/s fp32, ~30 GB/s)
CPU = Throughput(2e11, 4e11, 2.5e10, 3e10, 2.5e-6, source="test")


def llama(
    n_layers: int, hidden: int, inter: int, vocab: int, heads: int, kv: int, dtype_bytes: int
) -> ModelShape:
    linear = n_layers * (2 * hidden * hidden + 2 * hidden * hidden * kv // heads + 3 * hidden * inter)
    return ModelShape(
        linear + 2 * vocab * hidden, n_layers, hidden, inter, vocab, heads, kv, dtype_bytes, linear
    )


DEMO = llama(30, 576, 1536, 49152, 9, 3, 4)  # SmolLM2-135M, float32 after conversion
B1 = llama(22, 2048, 5632, 32000, 32, 4, 2)  # TinyLlama-1.1B, bf16
B7 = llama(32, 4096, 11008, 32000, 32, 32, 2)  # Llama-2-7B, bf16


def measure_s(shape: ModelShape, windows: int, seq_len: int, tp: Throughput = CPU) -> float:
    return evaluate_work(shape, windows, seq_len).seconds(tp)


def test_the_demo_model_keeps_the_default_when_it_is_cheap():
    assert measure_s(DEMO, 20, 512) <= CHEAP_SECONDS
    plan = choose_eval_windows(DEMO, 1.0, CPU)  # even when RTN compresses in a second
    assert (plan.windows, plan.seq_len) == (20, 512) and plan.chosen and "default" in plan.reason


def test_on_a_7b_model_measuring_takes_no_longer_than_compressing():
    compress_s = 900.0  # e.g. a 7B model compressed in a quarter of an hour
    assert 2 * measure_s(B7, 20, 512) > compress_s  # the default would take longer than the compression
    plan = choose_eval_windows(B7, compress_s, CPU)
    assert (
        plan.chosen and (plan.windows, plan.seq_len) in LADDER and (plan.windows, plan.seq_len) != (20, 512)
    )
    assert 2 * plan.seconds <= compress_s  # before and after together
    assert plan.seconds == pytest.approx(measure_s(B7, plan.windows, plan.seq_len))
    assert "bounded by the compression" in plan.reason
    # the largest plan that fits: the next larger one on the ladder would not
    bigger = LADDER[LADDER.index((plan.windows, plan.seq_len)) - 1]
    assert 2 * measure_s(B7, *bigger) > compress_s


def test_the_plan_grows_with_the_budget_and_shrinks_with_the_model():
    plans = [choose_eval_windows(B7, s, CPU) for s in (200.0, 1000.0, 3000.0, 100000.0)]
    sizes = [p.windows * p.seq_len for p in plans]
    assert sizes == sorted(sizes) and sizes[-1] == 20 * 512 and sizes[0] < sizes[-1]
    assert (
        choose_eval_windows(B1, 150.0, CPU).windows * 512 >= choose_eval_windows(B7, 150.0, CPU).windows * 512
    )
    slow = Throughput(2e10, 2e10, 1e10, 1e10, 5e-6)  # a slower device: fewer windows for the same budget
    fast_plan, slow_plan = choose_eval_windows(B1, 600.0, CPU), choose_eval_windows(B1, 600.0, slow)
    assert slow_plan.windows * slow_plan.seq_len < fast_plan.windows * fast_plan.seq_len


def test_when_nothing_fits_the_smallest_plan_is_used_and_said():
    plan = choose_eval_windows(B7, 1.0, Throughput(1e10, 1e10, 1e10, 1e9, 5e-6))
    assert (plan.windows, plan.seq_len) == LADDER[-1]
    assert "smallest" in plan.reason and "speed test" in plan.reason


def test_a_cached_original_counts_once():
    compress_s = 1.5 * measure_s(B7, 8, 512)  # 8x512 fits once, not twice
    fresh = choose_eval_windows(B7, compress_s, CPU)
    reused = choose_eval_windows(B7, compress_s, CPU, cached=[(8, 512)])
    assert (fresh.windows, fresh.seq_len) != (8, 512)
    assert (reused.windows, reused.seq_len) == (8, 512) and "reused" in reused.reason


def test_explicit_settings_win():
    plan = choose_eval_windows(B7, 1.0, CPU, windows=40, seq_len=1024)
    assert (plan.windows, plan.seq_len, plan.chosen) == (40, 1024, False) and plan.reason == "set by the user"
    only_windows = choose_eval_windows(B7, 1.0, CPU, windows=3)
    assert (only_windows.windows, only_windows.seq_len) == (3, 512)


class Info:  # what the Compress page has from the bounded inspection
    shape = B7
    size_on_disk_bytes = 13_500_000_000
    path = None


def test_the_whole_job_estimate_covers_every_stage_with_the_bounded_windows():
    cost = preflight.estimate_cost("rtn", Info(), {"bits": 4}, Calibration(8, 512))
    assert list(cost.stages) == [*RUN_STAGES, "total"]
    assert all(cost.stages[k] > 0 for k in RUN_STAGES), cost.stages
    assert cost.stages["total"] == pytest.approx(sum(cost.stages[k] for k in RUN_STAGES))
    plan = cost.eval_plan
    assert plan is not None and plan.chosen
    bounded = estimate_stages(
        B7,
        cost.estimate.seconds,
        size_on_disk_bytes=Info.size_on_disk_bytes,
        eval_windows=plan.windows,
        eval_seq_len=plan.seq_len,
    )
    assert cost.stages == pytest.approx(bounded)
    default = estimate_stages(B7, cost.estimate.seconds, size_on_disk_bytes=Info.size_on_disk_bytes)
    assert (plan.windows, plan.seq_len) != (20, 512)
    assert cost.stages["measure before"] < default["measure before"]
    # the user's windows: used as given
    given = preflight.estimate_cost(
        "rtn", Info(), {"bits": 4}, Calibration(8, 512), eval_windows=20, eval_seq_len=512
    )
    assert given.stages == pytest.approx(default) and not given.eval_plan.chosen


def test_a_run_without_windows_measures_on_the_bounded_plan_and_reports_why(tmp_path, monkeypatch):
    """Rates pinned slow enough that the tiny model's default measurement is no longer cheap: the run
    measures before and after on the plan the estimate chose, and its report and log say which and why."""
    import json

    from compressors.run import compress_and_measure
    from tests.compressors.tiny import tiny_model, tiny_tokenizer

    # matmuls slow, everything else fast: the windows' forward passes dominate, as on a large model
    slow = {
        "matmul_fp32": 1e7,
        "matmul_bf16": 1e7,
        "factor_fp32": 1e10,
        "bandwidth": 1e10,
        "op_overhead_s": 1e-5,
    }
    monkeypatch.setenv("SHRINKWISE_THROUGHPUT", json.dumps(slow))
    folder = tmp_path / "m"
    tiny_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    res = compress_and_measure(
        folder,
        "rtn",
        {"bits": 4},
        out_dir=tmp_path / "out",
        n_calib_samples=4,
        calib_seq_len=32,
        measure_speed=False,
        export=False,
        archive=None,
    )
    plan = res.evaluation
    assert plan is not None and plan["chosen"] and "bounded by the compression" in plan["reason"]
    assert (plan["windows"], plan["seq_len"]) != (20, 512) and (plan["windows"], plan["seq_len"]) in LADDER
    assert res.before.eval_windows == res.after.eval_windows == plan["windows"]
    assert res.after.eval_seq_len == plan["seq_len"]
    report = (tmp_path / "out" / "report.md").read_text()
    assert (
        f"Evaluation: {plan['windows']} windows of {plan['seq_len']} tokens, bounded by the compression"
        in report
    )
    assert any(line.startswith("evaluation: ") or "evaluation: " in line for line in res.log)
    assert res.estimate is not None and set(RUN_STAGES) <= set(res.estimate["stages"])
