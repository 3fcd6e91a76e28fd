"""Sweeps (issue 14): the recipe set, the derived status, cancel, measured vs predicted, "measured on your
model", and the original measured once when a sweep's children run at the same time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from jobs import queue, sweeps
from jobs.backend import JobSpec, LocalBackend
from jobs.sweeps import SweepItem, build_recipe_set, derive_status, neighbours
from knowledge.tables import RunStatus


@pytest.fixture(scope="module")
def recipes():
    from knowledge.catalog import load_catalog

    return load_catalog(include_measured=False).recipes


# --- the recipe set ----------------------------------------------------------------------------------


def test_preselection_takes_the_first_bundled_recipes_in_rank_order(recipes):
    ranked = [
        "fp8-kv-cache",
        "awq-w4a16-g128",
        "gptq-w4a16-g128",
        "rtn-w4a16-g128",
        "wanda-50",
        "sparsegpt-50",
    ]
    items = build_recipe_set(ranked, recipes, top=3, with_neighbours=False)
    # fp8-kv-cache and AWQ have no bundled compressor: skipped, not counted against top
    assert [i.recipe for i in items] == ["gptq-w4a16-g128", "rtn-w4a16-g128", "wanda-50"]
    assert all(i.neighbour_of is None for i in items)
    assert (
        items[0].compressor == "gptq"
        and items[0].config["bits"] == 4
        and items[0].config["group_size"] == 128
    )


def test_neighbours_vary_one_setting_within_what_the_compressor_accepts():
    rtn = SweepItem(
        "rtn-w4a16-g128", "RTN", "rtn", "rtn", {"bits": 4, "group_size": 128, "sym": False, "mse": False}
    )
    got = {(n.recipe, n.config["bits"], n.config["group_size"]) for n in neighbours(rtn)}
    assert got == {
        ("rtn-w4a16-g128@bits=3", 3, 128),
        ("rtn-w4a16-g128@bits=8", 8, 128),
        ("rtn-w4a16-g128@group_size=64", 4, 64),
    }
    two = SweepItem("x", "x", "rtn", "rtn", {"bits": 2, "group_size": 64, "sym": False, "mse": False})
    assert {n.config["bits"] for n in neighbours(two) if n.config["group_size"] == 64} == {3}  # no bits=1
    assert {n.config["group_size"] for n in neighbours(two)} == {64, 128}
    q8 = SweepItem("gguf-q8-0", "Q8_0", "gguf-k-quants", "gguf-kquant", {"type": "Q8_0", "imatrix": True})
    assert [n.config["type"] for n in neighbours(q8)] == ["Q6_K"]  # the last choice has one side only
    sparse = SweepItem(
        "wanda-50",
        "Wanda",
        "wanda",
        "wanda",
        {"sparsity": 0.5, "pattern": "unstructured", "true_sequential": False},
    )
    assert [n.config["pattern"] for n in neighbours(sparse)] == ["2:4"]


def test_a_neighbour_that_is_a_known_recipe_takes_its_id_and_duplicates_are_dropped(recipes):
    items = build_recipe_set(
        ["gptq-w4a16-g128-actorder", "sparsegpt-50", "sparsegpt-2of4"], recipes, top=3, limit=20
    )
    ids = [i.recipe for i in items]
    # 3 bits with act_order is the knowledge base's gptq-w3a16-g128: its id, so its prediction is shown
    assert "gptq-w3a16-g128" in ids
    assert next(i for i in items if i.recipe == "gptq-w3a16-g128").neighbour_of == "gptq-w4a16-g128-actorder"
    # SparseGPT 50% <-> 2:4 are each other's neighbours and both preselected: each appears once
    assert ids.count("sparsegpt-2of4") == 1 and ids.count("sparsegpt-50") == 1
    assert len({i.key() for i in items}) == len(items)
    from compressors.base import get_compressor

    for i in items:  # every item is a setting its compressor accepts as it stands
        assert get_compressor(i.compressor).config_cls.from_dict(i.config).to_dict() == i.config
    assert len(build_recipe_set(["gptq-w4a16-g128-actorder", "sparsegpt-50"], recipes, limit=4)) == 4


# --- status and cancel --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statuses", "state", "finished"),
    [
        (["queued", "queued"], "queued", False),
        (["running", "queued"], "running", False),
        (["succeeded", "queued"], "running", False),
        (["succeeded", "succeeded"], "succeeded", True),
        (["succeeded", "failed", "cancelled"], "partial", True),
        (["failed", "cancelled"], "failed", True),
        (["cancelled", "cancelled"], "cancelled", True),
    ],
)
def test_status_is_derived_from_the_children(statuses, state, finished):
    st = derive_status(statuses)
    assert (st.state, st.finished, st.total) == (state, finished, len(statuses))
    assert st.done == sum(s not in ("queued", "running") for s in statuses)


def _items(n: int = 3) -> list[SweepItem]:
    out = []
    for bits, g in [(4, 128), (8, 128), (3, 64)][:n]:
        cfg = {"bits": bits, "group_size": g, "sym": False, "mse": False}
        out.append(SweepItem(f"rtn-{bits}-{g}", f"RTN {bits}-bit g{g}", "rtn", "rtn", cfg))
    return out


def test_children_are_ordinary_jobs_with_the_sweep_id_and_shared_text(home):
    backend = LocalBackend(autostart=False)
    cal = {"eval_windows": 2, "eval_seq_len": 32, "n_calib_samples": 4, "calib_seq_len": 32}
    sweep = sweeps.create_sweep(
        model_ref="demo",
        model_name="SmolLM2-135M-Instruct",
        items=_items(),
        calibration=cal,
        owner="local",
        backend=backend,
    )
    jobs = sweeps.children(sweep)
    assert [j.recipe for j in jobs] == ["rtn-4-128", "rtn-8-128", "rtn-3-64"]
    assert {j.sweep_id for j in jobs} == {sweep.id} and {j.status for j in jobs} == {RunStatus.QUEUED}
    assert all(j.calibration == cal for j in jobs)
    assert sweep.model_key == sweeps.DEMO_MODEL_KEY  # the demo is the bundled SmolLM2-135M shape
    assert sweeps.get_sweep(sweep.public_id).id == sweep.id
    # a job queued alone stays outside every sweep
    lone = backend.submit(JobSpec(model_ref="demo", method="rtn", compressor="rtn"))
    assert backend.status(lone).sweep_id is None and len(sweeps.children(sweep)) == 3


def test_a_refused_recipe_leaves_no_half_made_sweep(home):
    from compressors.base import CompressionError

    bad = SweepItem("rtn-bad", "RTN 5-bit", "rtn", "rtn", {"bits": 5})
    with pytest.raises(CompressionError, match="RTN 5-bit"):
        sweeps.create_sweep(
            model_ref="demo", model_name="d", items=[*_items(1), bad], backend=LocalBackend(autostart=False)
        )
    assert sweeps.list_sweeps() == [] and queue.list_runs() == []


def test_cancel_ends_the_unfinished_children_and_keeps_the_finished_one(home):
    backend = LocalBackend(autostart=False)
    sweep = sweeps.create_sweep(model_ref="demo", model_name="d", items=_items(), backend=backend)
    first, second, third = (j.id for j in sweeps.children(sweep))
    queue.claim_next_run("w1")  # the first runs
    queue.finish_run(
        first, before_metrics={"perplexity": 10.0}, after_metrics={"perplexity": 11.0}, record_evidence=False
    )
    queue.claim_next_run("w1")  # the second runs, the third waits
    assert sweeps.sweep_status(sweep).state == "running"
    assert sorted(sweeps.cancel_sweep(sweep, backend=backend)) == [second, third]
    jobs = {j.id: j for j in sweeps.children(sweep)}
    assert jobs[first].status is RunStatus.SUCCEEDED
    assert jobs[second].cancel_requested and jobs[second].status is RunStatus.RUNNING  # its worker stops it
    assert jobs[third].status is RunStatus.CANCELLED
    queue.mark_cancelled(second)  # what the worker does once the job has stopped
    assert sweeps.sweep_status(sweep).state == "partial"


# --- measured vs predicted ------------------------------------------------------------------------------


def _finish(job_id: int, ppl: float, size: float, bits: float, decode: float) -> None:
    before = {
        "perplexity": 20.0,
        "size_bytes": 1e6,
        "model_bits_per_weight": 16.0,
        "decode_tokens_per_s": 50.0,
    }
    after = {
        "perplexity": ppl,
        "size_bytes": size,
        "model_bits_per_weight": bits,
        "decode_tokens_per_s": decode,
    }
    queue.finish_run(job_id, before_metrics=before, after_metrics=after, record_evidence=False)


def test_measured_vs_predicted_front_and_the_choice_within_limits(home):
    items = _items()
    predicted = {
        "rtn-4-128": {
            "quality_drop_pct": 2.0,
            "low_pct": 1.0,
            "high_pct": 3.0,
            "bits_per_weight": 4.2,
            "kv_cache_gb": 0.0,
        },
        "rtn-8-128": {
            "quality_drop_pct": 0.1,
            "low_pct": 0.0,
            "high_pct": 0.2,
            "bits_per_weight": 8.1,
            "kv_cache_gb": 0.0,
        },
    }  # rtn-3-64 is a neighbour without a prediction
    sweep = sweeps.create_sweep(
        model_ref="demo",
        model_name="d",
        items=items,
        predicted=predicted,
        limits={"max_quality_drop": 5.0, "memory_gb": None},
        backend=LocalBackend(autostart=False),
    )
    ids = [j.id for j in sweeps.children(sweep)]
    for _ in ids:
        queue.claim_next_run("w")
    _finish(ids[0], 21.0, 300_000, 4.5, 60.0)  # +5%: at the limit
    _finish(ids[1], 20.1, 550_000, 8.4, 55.0)  # +0.5%
    _finish(ids[2], 24.0, 250_000, 3.6, 62.0)  # +20%: over the limit
    jobs = sweeps.children(sweep)
    points = sweeps.measured_points(sweep, jobs)
    assert [round(p.quality_drop_pct, 6) for p in points] == [5.0, 0.5, 20.0]
    # each point is smaller or better than every other: all three are on the front
    assert {p.recipe for p in sweeps.size_front(points)} == {"rtn-4-128", "rtn-8-128", "rtn-3-64"}
    # the front follows the plotted size: equal bits per weight, fewer bytes on disk for the worse one
    # (seen on the demo: RTN and GPTQ 4-bit); on the bits axis only the better of the two is on it
    import dataclasses

    gptq_like = dataclasses.replace(points[0], recipe="gptq-4-128", quality_drop_pct=3.0, size_bytes=300_100)
    both = [points[0], gptq_like]
    assert {p.recipe for p in sweeps.size_front(both)} == {"rtn-4-128", "gptq-4-128"}
    assert [p.recipe for p in sweeps.size_front(both, "bits_per_weight")] == ["gptq-4-128"]
    # faster or better than each other: all three on the speed front too, fastest first
    assert [p.recipe for p in sweeps.speed_front(points)] == ["rtn-3-64", "rtn-4-128", "rtn-8-128"]
    chosen = sweeps.select_within_limits(points, sweep.limits, sweep.predicted)
    assert chosen is not None and chosen.recipe == "rtn-4-128"  # the smallest within a 5% drop
    assert sweeps.select_within_limits(points, {"max_quality_drop": 1.0}, predicted).recipe == "rtn-8-128"
    assert sweeps.select_within_limits(points, {"max_quality_drop": 0.1}, predicted) is None
    budget = {"max_quality_drop": 50.0, "memory_gb": 0.0003}  # 300 kB: only the two smaller fit
    assert sweeps.select_within_limits(points, budget, predicted).recipe == "rtn-3-64"
    rows = {r["recipe"]: r for r in sweeps.comparison_rows(items, predicted, jobs, points)}
    assert rows["rtn-4-128"]["drop_error_pct"] == pytest.approx(3.0)
    assert rows["rtn-4-128"]["in_range"] is False  # measured 5% against 1..3%
    assert rows["rtn-8-128"]["in_range"] is False and rows["rtn-8-128"]["drop_error_pct"] == pytest.approx(
        0.4
    )
    assert rows["rtn-3-64"]["predicted_drop_pct"] is None and rows["rtn-3-64"]["in_range"] is None
    assert rows["rtn-3-64"]["measured_size_mb"] == pytest.approx(0.25)
    assert [r["status"] for r in rows.values()] == ["succeeded"] * 3


def test_speed_front_keeps_only_the_undominated():
    def pt(rid, drop, tps):
        return sweeps.MeasuredPoint(rid, rid, 1, None, drop, 10.0, 10.0, 1.0, 4.0, tps, None)

    pts = [pt("a", 1.0, 50.0), pt("b", 2.0, 40.0), pt("c", 0.5, 45.0)]
    assert [p.recipe for p in sweeps.speed_front(pts)] == ["a", "c"]  # b is slower and worse than a


def test_measured_on_your_model_reaches_the_recommendation(home):
    from engine import Constraints, recommend
    from knowledge.catalog import load_catalog

    cat = load_catalog(include_measured=False)
    c = Constraints.from_dict({"model": "smollm2-135m", "hardware": "cpu", "max_quality_drop": 5})
    doc = recommend(c, cat.methods, cat.evidence, recipes=cat.recipes).to_dict()
    swept = next(r["id"] for r in doc["ranked"] if r.get("bundled"))
    item = sweeps.item_for_recipe(cat.recipes[swept])
    sweep = sweeps.create_sweep(
        model_ref="demo",
        model_name="SmolLM2-135M-Instruct",
        items=[item],
        backend=LocalBackend(autostart=False),
    )
    job = sweeps.children(sweep)[0].id
    assert sweeps.measured_on_model("smollm2-135m") == {}  # nothing measured yet
    queue.claim_next_run("w")
    _finish(job, 20.5, 400_000, 8.5, 55.0)
    measured = sweeps.measured_on_model("smollm2-135m")
    assert (
        measured[swept]["quality_drop_pct"] == pytest.approx(2.5)
        and measured[swept]["sweep"] == sweep.public_id
    )
    assert sweeps.measured_on_model("llama-3.1-8b") == {} and sweeps.measured_on_model(None) == {}
    assert sweeps.measured_on_model("smollm2-135m", owner="someone-else") == {}
    sweeps.annotate_recommendation(doc, measured)
    card = next(r for r in doc["ranked"] if r["id"] == swept)
    assert card["measured"]["quality_drop_pct"] == pytest.approx(2.5)
    assert card["estimate"]["quality_drop_pct"] is not None  # the prediction stays beside it
    assert all("measured" not in r for r in doc["ranked"] if r["id"] != swept)


# --- the original measured once ------------------------------------------------------------------------


def test_a_run_waiting_for_the_baseline_lock_answers_cancel(home):
    from compressors.base import Cancelled
    from compressors.measure_cache import BaselineLock

    held = BaselineLock("k" * 32).acquire()
    cancel = threading.Event()
    waited = []
    ticks = []

    def tick(_s):
        ticks.append(1)
        if len(ticks) == 3:
            cancel.set()

    with pytest.raises(Cancelled, match="waiting for another run"):
        BaselineLock("k" * 32).acquire(cancel, on_wait=lambda: waited.append(1), clock=tick)
    assert waited == [1] and len(ticks) == 3
    held.release()
    other = BaselineLock("k" * 32).acquire(clock=lambda _s: pytest.fail("the free lock made it wait"))
    assert other.held
    other.release()
    assert BaselineLock(None).acquire().held is False  # no key (a hub model): nothing to lock


def test_concurrent_runs_of_a_sweep_measure_the_original_once(home, tmp_path, monkeypatch):
    """Two runs on the same files and text at the same moment: the first measures the original while the
    second waits for it, then reuses it; without the lock both would miss the cache and measure."""
    import compressors.run as run_mod
    from compressors.run import compress_and_measure
    from tests.jobs import checkpoints as ck

    folder = ck.tiny_checkpoint(tmp_path / "tiny")
    before_calls = []
    real = run_mod.evaluate

    def slow_before(model, *a, **k):
        if (
            Path(k.get("checkpoint_dir") or "/").resolve() == folder.resolve()
        ):  # the original: make the race certain
            before_calls.append(1)
            time.sleep(1.5)
        return real(model, *a, **k)

    monkeypatch.setattr(run_mod, "evaluate", slow_before)
    fast = dict(
        n_calib_samples=4,
        calib_seq_len=32,
        eval_windows=2,
        eval_seq_len=32,
        archive=None,
        measure_speed=False,
        export=False,
    )
    results: dict[str, object] = {}
    errors: list[BaseException] = []

    def run(name: str, bits: int) -> None:
        try:
            results[name] = compress_and_measure(
                str(folder), "rtn", {"bits": bits, "group_size": 32}, out_dir=tmp_path / name, **fast
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"r{b}", b)) for b in (4, 8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert len(before_calls) == 1, "the original was measured by both runs"
    a, b = results["r4"], results["r8"]
    assert a.before.perplexity == b.before.perplexity
    waited = [r for r in (a, b) if any("waiting for another run" in line for line in r.log)]
    assert len(waited) == 1 and any("reused" in line for line in waited[0].log)
