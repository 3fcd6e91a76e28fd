"""``shrinkwise recommend``: ranked, explained compression methods for your constraints.

::

    shrinkwise recommend [--constraints FILE] [--phases post-training,inference] [--keep-original]
        [--priority balanced] [--hardware nvidia-gpu] [--model-params 7e9] [--memory-gb 6]
        [--max-quality-drop 2] [--no-calibration-data] [--training-budget none] [--workload chat]
        [--serving-engine vllm] [--top N] [--json]

Flags override the values of the constraints file. Human output is a rich table of the ranked methods,
the number excluded (by rule) and the best pipelines; ``--json`` prints one JSON document
(``{"ranked", "excluded", "pipelines", "constraints"}``). Exit codes: 0 fine, 1 invalid knowledge-base
data, 2 bad input (the message names the field, the bad value and the allowed values).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.constraints import Constraints, ConstraintsError

_out = Console(soft_wrap=False)
_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``recommend`` to the main ``shrinkwise`` app."""
    app.command("recommend")(recommend_command)


def build_constraints(file: Path | None, overrides: dict[str, Any]) -> Constraints:
    """The constraints file (or the defaults) with the given flags applied on top."""
    base = Constraints.from_file(file) if file is not None else Constraints()
    given = {k: v for k, v in overrides.items() if v is not None}
    return base.with_overrides(given) if given else base


def _fail(message: str, code: int = 2) -> NoReturn:
    _err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True)
    raise typer.Exit(code)


def recommend_command(
    constraints_file: Path | None = typer.Option(
        None, "--constraints", help="YAML or JSON file of constraints (see examples/constraints/)."
    ),
    phases: str | None = typer.Option(
        None,
        "--phases",
        help="Comma-separated phases you can intervene in: pre-training,post-training,fine-tuning,inference.",
    ),
    keep_original: bool = typer.Option(
        False, "--keep-original", help="The original weights must stay usable."
    ),
    priority: str | None = typer.Option(None, "--priority", help="predictability, balanced or adaptivity."),
    hardware: str | None = typer.Option(
        None, "--hardware", help="cpu, nvidia-gpu, amd-gpu, apple-silicon or mobile."
    ),
    model_params: str | None = typer.Option(None, "--model-params", help="Parameters: 7e9, 7B, 135M."),
    memory_gb: str | None = typer.Option(None, "--memory-gb", help="Memory budget for the weights, GB."),
    max_quality_drop: str | None = typer.Option(
        None, "--max-quality-drop", help="Acceptable quality drop, percent (perplexity or accuracy)."
    ),
    no_calibration_data: bool = typer.Option(
        False, "--no-calibration-data", help="You have no calibration text."
    ),
    training_budget: str | None = typer.Option(None, "--training-budget", help="none, low or high."),
    workload: str | None = typer.Option(None, "--workload", help="chat, long-context, batch or multimodal."),
    serving_engine: str | None = typer.Option(
        None, "--serving-engine", help="vllm, llama.cpp, transformers, tensorrt-llm, onnxruntime or openvino."
    ),
    top: int | None = typer.Option(None, "--top", min=1, help="Show only the N best methods."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."),
) -> None:
    """Rank compression methods for your constraints, with the rules behind every score."""
    overrides: dict[str, Any] = {
        "phases": phases,
        "keep_original": True if keep_original else None,
        "priority": priority,
        "hardware": hardware,
        "model_params": model_params,
        "memory_gb": memory_gb,
        "max_quality_drop": max_quality_drop,
        "calibration_data": False if no_calibration_data else None,
        "training_budget": training_budget,
        "workload": workload,
        "serving_engine": serving_engine,
    }
    try:
        constraints = build_constraints(constraints_file, overrides)
    except ConstraintsError as exc:
        _fail(str(exc))

    from engine.recommend import recommend
    from knowledge.catalog import load_catalog
    from knowledge.loader import DataFileError

    try:
        catalog = load_catalog()
    except DataFileError as exc:
        _fail(f"the knowledge base is invalid:\n{exc}", code=1)
    rec = recommend(constraints, catalog.methods, catalog.evidence, top=top)

    if as_json:
        sys.stdout.write(json.dumps(rec.to_dict(), indent=2) + "\n")
        return
    _print_human(rec)


def _fmt_gb(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _print_human(rec: Any) -> None:
    c = rec.constraints
    summary = ", ".join(f"{k}={v}" for k, v in c.to_query().items())
    _out.print(f"[bold]Constraints[/]: {escape(summary)}", highlight=False)

    table = Table(title="Recommended methods (best first)", show_lines=True)
    for col, kw in (
        ("#", {"justify": "right"}),
        ("method\nphase / impact", {"no_wrap": True}),
        ("score", {"justify": "right"}),
        ("mem GB", {"justify": "right"}),
        ("fits", {"justify": "center"}),
        ("quality\ndrop", {"justify": "right"}),
        ("top reasons", {"overflow": "fold", "ratio": 1}),
    ):
        table.add_column(col, **kw)
    for i, r in enumerate(rec.ranked, 1):
        est = r.estimate
        fits = "—" if est.fits is None else ("yes" if est.fits else "no")
        basis = "" if est.quality_basis == "evidence" else "*"
        top_reasons = [x for x in r.reasons if x.effect != "note"][:2]
        reasons = escape("\n".join(f"{x.weight:+.1f} {x.text}" for x in top_reasons))
        table.add_row(
            str(i),
            f"{escape(r.id)}\n[dim]{r.method.phase.value} / {r.method.impact.value}[/]",
            f"{r.score:.2f}",
            _fmt_gb(est.memory_gb),
            fits,
            f"{est.quality_drop_pct:.1f}%{basis}",
            reasons,
        )
    _out.print(table)
    _out.print("[dim]* quality drop from the method's grade (no evidence row); memory = weights only[/]")

    by_rule = Counter(reason.rule_id for e in rec.excluded for reason in e.reasons)
    detail = ", ".join(f"{rule} ({n})" for rule, n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0])))
    _out.print(
        f"[bold]Excluded[/]: {len(rec.excluded)} methods" + (f", by rule: {detail}" if detail else ""),
        highlight=False,
    )

    if rec.pipelines:
        pt = Table(title="Pipelines (stacks across phases, in application order)")
        for col in ("#", "stack", "score", "bits", "memory GB", "fits", "quality drop (upper bound)"):
            pt.add_column(col, overflow="fold")
        for i, p in enumerate(rec.pipelines, 1):
            est = p.estimate
            pt.add_row(
                str(i),
                escape(" → ".join(f"{m.id} ({m.phase.value})" for m in p.methods)),
                f"{p.score:.2f}",
                f"{est.bits_per_weight:g}",
                _fmt_gb(est.memory_gb),
                "—" if est.fits is None else ("yes" if est.fits else "no"),
                f"{est.quality_drop_pct:.1f}%",
            )
        _out.print(pt)
    else:
        _out.print("[bold]Pipelines[/]: none pass the constraints.")
