"""A sweep of four recipes on the demo model through the configured job backend: wall time and the
measured-vs-predicted table (issue 14's closing note).

The sweep is made as the Sweep page makes one from a recommendation (SmolLM2-135M on a CPU, quality drop
at most 5% by default): the recommender's predicted points and the limits are stored with it, the four
children are submitted through :func:`jobs.backend.get_backend` (``SHRINKWISE_JOB_BACKEND``: ``local``,
the worker pool on this machine, or a cluster backend), and the script waits until every child ended.
The original model is measured once (the first child), the others reuse it.

::

    .venv/bin/python benchmarks/sweep_demo.py                                   # local worker pool
    SHRINKWISE_JOB_BACKEND=ray .venv/bin/python benchmarks/sweep_demo.py        # a Ray cluster
    .venv/bin/python benchmarks/sweep_demo.py --recipes rtn-w4a16-g128,rtn-w8a16 --eval-windows 4

Prints the wall time from submission to the last child's end, each child's time, the measured-vs-
predicted table, and the sweep's public id (open ``/sweep?sweep=<id>`` in the app on the same
``SHRINKWISE_HOME`` to see its chart). ``--json`` writes the figures to a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_RECIPES = "rtn-w4a16-g128,rtn-w8a16,gptq-w4a16-g128,wanda-50"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", default=DEFAULT_RECIPES, help="recipe ids, comma-separated")
    ap.add_argument("--calib-samples", type=int, default=16)
    ap.add_argument("--eval-windows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--no-speed", action="store_true", help="do not measure decode speed")
    ap.add_argument("--max-drop", type=float, default=5.0, help="the quality limit (%%)")
    ap.add_argument("--timeout", type=float, default=14400.0, help="seconds to wait for the children")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from engine import Constraints, recommend
    from jobs import sweeps
    from jobs.backend import get_backend
    from knowledge.catalog import load_catalog

    cat = load_catalog()
    c = Constraints.from_dict({"model": "smollm2-135m", "hardware": "cpu", "max_quality_drop": args.max_drop})
    rec = recommend(c, cat.methods, cat.evidence, recipes=cat.recipes)
    items = []
    for rid in args.recipes.split(","):
        item = sweeps.item_for_recipe(cat.recipes[rid])
        if item is None:
            raise SystemExit(f"{rid} has no bundled compressor")
        items.append(item)
    backend = get_backend()
    t0 = time.perf_counter()
    sweep = sweeps.create_sweep(
        model_ref="demo",
        model_name="SmolLM2-135M-Instruct",
        items=items,
        calibration={
            "eval": "pydoc_data.topics (held-out part)",
            "n_calib_samples": args.calib_samples,
            "calib_seq_len": args.seq_len,
            "eval_windows": args.eval_windows,
            "eval_seq_len": args.seq_len,
            "measure_speed": not args.no_speed,
        },
        owner="local",
        predicted=sweeps.predictions(c, cat, items, rec.ranked_ids),
        limits=sweeps.limits_of(c),
        model_key="smollm2-135m",
        origin="recommendation",
        backend=backend,
    )
    print(f"sweep {sweep.public_id}: {len(items)} recipes through the {type(backend).__name__}", flush=True)
    while True:
        status = sweeps.sweep_status(sweep)
        if status.finished:
            break
        if time.perf_counter() - t0 > args.timeout:
            raise SystemExit(f"not finished after {args.timeout:.0f} s: {status.counts}")
        time.sleep(2.0)
    wall = time.perf_counter() - t0
    jobs = sweeps.children(sweep)
    points = sweeps.measured_points(sweep, jobs)
    rows = sweeps.comparison_rows(items, sweep.predicted, jobs, points)
    chosen = sweeps.select_within_limits(points, sweep.limits, sweep.predicted)
    load = os.getloadavg()
    print(f"\nwall time {wall:.1f} s (submission to the last child's end); state {status.state}")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} cores")
    for j in jobs:
        before = (j.timings or {}).get("measure before")
        print(
            f"  {j.recipe}: {j.status.value}, job {j.elapsed_s or 0:.1f} s, measure before "
            + ("reused" if before == 0 else f"{before:.1f} s" if before else "–")
            + (f" ({j.error})" if j.error else "")
        )
    print(
        "\n| recipe | predicted drop % (range) | measured drop % | in range | predicted bits/w | measured bits/w | size MB | decode tok/s |"
    )
    print("|---|---|---|---|---|---|---|---|")

    def f(v: object, spec: str) -> str:
        return "–" if v is None else format(v, spec)

    for r in rows:
        rng = (
            f" ({r['predicted_low_pct']:+.2f} to {r['predicted_high_pct']:+.2f})"
            if r["predicted_low_pct"] is not None and r["predicted_high_pct"] is not None
            else ""
        )
        print(
            f"| {r['name']} | {f(r['predicted_drop_pct'], '+.2f')}{rng} | {f(r['measured_drop_pct'], '+.2f')} | "
            f"{'–' if r['in_range'] is None else 'yes' if r['in_range'] else 'no'} | "
            f"{f(r['predicted_bits_per_weight'], '.2f')} | {f(r['measured_bits_per_weight'], '.2f')} | "
            f"{f(r['measured_size_mb'], '.1f')} | {f(r['decode_tokens_per_s'], '.1f')} |"
        )
    print(f"\nyour limits ({args.max_drop:g}% drop) select: {chosen.name if chosen else 'nothing'}")
    print(f"open /sweep?sweep={sweep.public_id}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"sweep": sweep.public_id, "wall_s": wall, "load": load, "rows": rows, "state": status.state},
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
