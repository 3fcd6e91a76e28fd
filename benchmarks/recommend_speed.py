"""How long one ``recommend`` over the whole knowledge base with recipes takes (issue 10: median < 20 ms).

Loads the real catalog once (data files only), warms the rule cache, then times ``recommend`` N times
for each of a few constraint sets (the defaults and the example files), including the pipelines, and
prints the median and the 95th percentile in milliseconds::

    .venv/bin/python benchmarks/recommend_speed.py            # N=200
    .venv/bin/python benchmarks/recommend_speed.py -n 500 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import Constraints, recommend  # noqa: E402
from engine.ruleset import default_rules  # noqa: E402
from knowledge.catalog import load_catalog  # noqa: E402


def scenarios() -> dict[str, Constraints]:
    out = {"defaults": Constraints()}
    for f in sorted((ROOT / "examples" / "constraints").glob("*.*")):
        out[f.stem] = Constraints.from_file(f)
    out["predictability+memory"] = Constraints(priority="predictability", training_budget="high", memory_gb=6)
    out["h100+vllm+8b"] = Constraints(model="llama-3.1-8b", device="h100-sxm", serving_engine="vllm")
    out["long-context"] = Constraints(model="llama-3.1-8b", context_length=131072, batch_size=4, memory_gb=48)
    out["cpu+llama.cpp"] = Constraints(model="llama-3.1-8b", hardware="cpu", serving_engine="llama.cpp")
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="runs per constraint set (default 200)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    catalog = load_catalog(include_measured=False)
    load_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    rules = default_rules()
    rules_ms = (time.perf_counter() - t0) * 1e3

    rows = []
    for name, c in scenarios().items():
        rec = recommend(c, catalog.methods, catalog.evidence, recipes=catalog.recipes)  # warm-up
        times, cpu = [], []
        for _ in range(args.n):
            t, tc = time.perf_counter(), time.process_time()
            recommend(c, catalog.methods, catalog.evidence, recipes=catalog.recipes)
            times.append((time.perf_counter() - t) * 1e3)
            cpu.append((time.process_time() - tc) * 1e3)
        rows.append(
            {
                "constraints": name,
                "ranked": len(rec.ranked),
                "excluded": len(rec.excluded),
                "pipelines": len(rec.pipelines),
                "median_ms": statistics.median(times),
                "p95_ms": percentile(times, 0.95),
                "median_cpu_ms": statistics.median(cpu),
            }
        )

    if args.json:
        print(
            json.dumps(
                {
                    "methods": len(catalog.methods),
                    "evidence": len(catalog.evidence),
                    "rules": len(rules),
                    "runs": args.n,
                    "load_average": os.getloadavg()[0],
                    "cores": os.cpu_count(),
                    "catalog_load_ms": load_ms,
                    "rules_load_ms": rules_ms,
                    "results": rows,
                },
                indent=2,
            )
        )
        return 0
    console = Console()
    if not console.is_terminal:
        console = Console(width=110)  # piped: keep the scenario names whole
    table = Table(
        title=f"recommend() over {len(catalog.methods)} methods, {len(catalog.evidence)} evidence rows, "
        f"{len(rules)} rules; {args.n} runs each"
    )
    for col in ("constraints", "ranked", "excluded", "pipelines", "median ms", "p95 ms", "median CPU ms"):
        table.add_column(col, justify="left" if col == "constraints" else "right")
    for r in rows:
        table.add_row(
            r["constraints"],
            str(r["ranked"]),
            str(r["excluded"]),
            str(r["pipelines"]),
            f"{r['median_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['median_cpu_ms']:.2f}",
        )
    console.print(table)
    allw = [r["median_ms"] for r in rows]
    console.print(
        f"median over all sets: {statistics.median(allw):.2f} ms wall "
        f"(CPU {statistics.median(r['median_cpu_ms'] for r in rows):.2f} ms; CPU time is the steadier "
        f"figure on a shared machine); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    console.print(f"one-off costs: catalog load {load_ms:.0f} ms, rules parse+compile {rules_ms:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
