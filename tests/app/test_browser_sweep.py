"""End to end in a real browser: a sweep of three recipes on a tiny checkpoint, run by the worker pool
the app starts itself (the embedded runner), followed live on the Sweep page until the Pareto chart and
the measured-vs-predicted table are drawn.

Shares the Streamlit server and Chromium fixtures of tests/app/test_browser_run.py (its own server on a
fresh data folder). Screenshots go to ``artifacts/browser/`` (or ``$SHRINKWISE_ARTIFACTS``): the set-up,
the sweep while it runs, and the finished page; the time from Start to the chart goes to
``sweep-timing.txt``. The text budget is tiny (4 calibration and 2 evaluation windows of 64 tokens), so the
three jobs take about a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from tests.app.test_browser import ARTIFACTS, _shot, _wait_idle
from tests.app.test_browser_run import app_home, browser, run_server  # noqa: F401  (fixtures)
from tests.jobs import checkpoints as ck

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RECIPES = ["rtn-w4a16-g128", "rtn-w8a16", "wanda-50"]


def test_sweep_three_recipes_on_a_tiny_model_to_the_pareto_chart(run_server, browser, app_home, tmp_path):  # noqa: F811
    folder = ck.tiny_checkpoint(tmp_path / "tiny-llama")
    query = {
        "source": "path",
        "path": str(folder),
        "recipes": ",".join(RECIPES),
        "calib_samples": "4",
        "eval_windows": "2",
        "seq_len": "64",
    }
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{run_server}/sweep?{urlencode(query)}")
    page.get_by_role("heading", name="4. Run").wait_for(timeout=120_000)
    page.get_by_text("LlamaForCausalLM").first.wait_for(timeout=120_000)
    _wait_idle(page, 90_000)
    _shot(page, "sweep-setup.png")
    start = page.get_by_role("button", name="Start the sweep")
    assert start.is_enabled()
    t0 = time.perf_counter()
    start.click()
    page.get_by_text("recipes finished").first.wait_for(timeout=60_000)
    ref = parse_qs(urlparse(page.url).query)["sweep"][0]
    assert not ref.isdigit() and len(ref) >= 12, "sweep links carry an unguessable id"
    shot_running = False
    for _ in range(1200):
        if page.get_by_text("3 of 3 recipes finished").count():
            break
        if not shot_running and page.get_by_text("running", exact=True).count():
            shot_running = True
            _shot(page, "sweep-running.png")
        page.wait_for_timeout(500)
    else:
        _shot(page, "sweep-timeout.png")
        pytest.fail("the sweep did not finish in 10 minutes")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 1", timeout=60_000)
    page.locator("[data-testid='stDataFrame']").first.wait_for(timeout=60_000)
    took = time.perf_counter() - t0
    _wait_idle(page)
    page.wait_for_timeout(1000)
    _shot(page, "sweep-finished.png")
    body = page.locator("[data-testid='stMain']").inner_text()
    assert "succeeded" in body and "failed" not in body, body[-2000:]
    assert "Measured against predicted" in body and "Your limits" in body
    # the table is drawn on a canvas (its cells are not DOM text): its rows are checked from the database below
    assert page.locator("[data-testid='stDataFrame']").count() == 1
    # three measured markers and the recommender's predictions on the chart
    traces = page.evaluate(
        "() => Array.from(document.querySelector('.js-plotly-plot').data).map(t => t.meta || '')"
    )
    assert traces.count("measured") == 3 and "pareto" in traces

    # the original was measured once: the other two children reused it
    import os

    from jobs import sweeps
    from knowledge import db

    old = os.environ.get("SHRINKWISE_HOME")
    os.environ["SHRINKWISE_HOME"] = str(app_home)
    db.dispose_engines()
    try:
        sweep = sweeps.get_sweep(ref)
        jobs = sweeps.children(sweep)
        assert [j.recipe for j in jobs] == RECIPES and {j.status.value for j in jobs} == {"succeeded"}
        measured_before = [j.timings.get("measure before") for j in jobs]
        assert sum(1 for s in measured_before if s) == 1, measured_before
        assert len({j.before_metrics["perplexity"] for j in jobs}) == 1
        # a diamond for every recipe the recommender could predict for a model of this size
        predictable = [
            rid for rid in RECIPES if (sweep.predicted.get(rid) or {}).get("quality_drop_pct") is not None
        ]
        assert predictable and traces.count("predicted") == len(predictable)
        rows = sweeps.comparison_rows(
            [sweeps.SweepItem.from_json(r) for r in sweep.recipes],
            sweep.predicted,
            jobs,
            sweeps.measured_points(sweep, jobs),
        )
        assert all(r["measured_drop_pct"] is not None for r in rows)
        print(
            "\n"
            + "\n".join(
                f"{r['recipe']}: predicted {r['predicted_drop_pct']} ({r['predicted_low_pct']}..{r['predicted_high_pct']}), "
                f"measured {r['measured_drop_pct']:+.2f}%, {r['measured_size_mb']:.3f} MB"
                for r in rows
            )
        )
    finally:
        db.dispose_engines()
        if old is None:
            os.environ.pop("SHRINKWISE_HOME", None)
        else:
            os.environ["SHRINKWISE_HOME"] = old
    page.close()
    line = f"tiny Llama, sweep of 3 recipes ({', '.join(RECIPES)}), 4x64 calibration, 2x64 evaluation: Start -> chart {took:.1f} s"
    print("\n" + line)
    (ARTIFACTS / "sweep-timing.txt").write_text(line + "\n")
