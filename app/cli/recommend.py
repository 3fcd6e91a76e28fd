"""``shrinkwise recommend``: ranked, explained compression methods for your constraints.

::

    shrinkwise recommend [--constraints FILE] [--phases post-training,inference] [--keep-original]
        [--priority balanced] [--hardware nvidia-gpu] [--model-params 7e9] [--memory-gb 6]
        [--max-quality-drop 2] [--no-calibration-data] [--training-budget none] [--workload chat]
        [--serving-engine vllm] [--model llama-3.1-8b] [--device h100-sxm] [--context-length 4096]
        [--batch-size 1] [--top N] [--json]

Flags override the values of the constraints file. Human output is a rich table of the ranked recipes
(configuration, format, engine, memory of weights and KV cache, quality estimate), the commands that
produce and serve the best ones, the number excluded (by rule) and the best pipelines; ``--json``
prints one JSON document (``{"ranked", "bundled_alternative", "nothing_fits", "excluded",
"pipelines", "constraints", "model"}``). Exit codes: 0 fine, 1 invalid knowledge-base
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
    memory_gb: str | None = typer.Option(
        None, "--memory-gb", help="Memory budget for weights + KV cache, GB (default: the device's)."
    ),
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
    model: str | None = typer.Option(
        None, "--model", help="Model shape: bundled id (llama-3.1-8b), a config.json path or a hub id."
    ),
    device: str | None = typer.Option(None, "--device", help="Device id, e.g. h100-sxm, rtx-4090, m3-max."),
    context_length: str | None = typer.Option(None, "--context-length", help="Tokens per sequence."),
    batch_size: str | None = typer.Option(None, "--batch-size", help="Concurrent sequences."),
    top: int | None = typer.Option(None, "--top", min=1, help="Show only the N best recipes."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document instead of tables."),
) -> None:
    """Rank compression recipes for your constraints, with the rules and commands behind each."""
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
        "model": model,
        "device": device,
        "context_length": context_length,
        "batch_size": batch_size,
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
    rec = recommend(constraints, catalog.methods, catalog.evidence, top=top, recipes=catalog.recipes)

    if as_json:
        sys.stdout.write(json.dumps(rec.to_dict(), indent=2) + "\n")
        return
    _print_human(rec)


def _fmt_gb(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _quality(est: Any) -> str:
    drop = est.quality_drop_pct
    if drop is None:
        return "unknown"
    q = est.quality
    rng = f" ({q.low_pct:.1f}-{q.high_pct:.1f})" if q.low_pct is not None and q.high_pct is not None else ""
    return f"{drop:.2f}%{rng}\n[dim]{q.basis}, {q.rows} rows[/]"


def _print_human(rec: Any) -> None:
    c = rec.constraints
    summary = ", ".join(f"{k}={v}" for k, v in c.to_query().items())
    _out.print(f"[bold]Constraints[/]: {escape(summary)}", highlight=False)

    table = Table(title="Recommended recipes (best first)", show_lines=True)
    for col, kw in (
        ("#", {"justify": "right"}),
        ("recipe\nmethod (phase / impact)", {"no_wrap": True}),
        ("config", {"overflow": "fold"}),
        ("format → engine", {"overflow": "fold"}),
        ("weights + KV GB", {"justify": "right"}),
        ("fits", {"justify": "center"}),
        ("quality drop", {"justify": "right"}),
        ("score", {"justify": "right"}),
        ("top reasons", {"overflow": "fold", "ratio": 1}),
    ):
        table.add_column(col, **kw)
    for i, r in enumerate(rec.ranked, 1):
        est = r.estimate
        fits = "—" if est.fits is None else ("yes" if est.fits else "no")
        top_reasons = [x for x in r.reasons if x.effect != "note"][:2]
        reasons = escape("\n".join(f"{x.weight:+.1f} {x.text}" for x in top_reasons))
        table.add_row(
            str(i),
            f"{escape(r.id)}\n[dim]{escape(r.method.id)} ({r.method.phase.value} / {r.method.impact.value})[/]",
            escape(r.recipe.config_text()),
            escape(f"{r.recipe.format} → {r.engine or '?'}"),
            f"{_fmt_gb(est.memory.weights_gb)} + {_fmt_gb(est.memory.kv_cache_gb)}",
            fits,
            _quality(est),
            f"{r.score:.2f}",
            reasons,
        )
    _out.print(table)
    _out.print(
        "[dim]memory: weights + KV cache at the context length x batch size (runtime overhead shown in "
        "--json); quality 'unknown' = no evidence row, ranked after the recipes whose evidence meets the limit[/]"
    )
    for r in rec.ranked[:3]:
        _print_commands(r)
    if rec.bundled is not None:
        _out.print(
            f"[bold]Best recipe Shrinkwise can run itself[/]: {escape(rec.bundled.id)} "
            f"(the first recipe has no bundled compressor)"
        )
        _print_commands(rec.bundled)
    if rec.nothing_fits:
        _print_nothing_fits(rec.nothing_fits)

    by_rule = Counter(reason.rule_id for e in rec.excluded for reason in e.reasons)
    detail = ", ".join(f"{rule} ({n})" for rule, n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0])))
    _out.print(
        f"[bold]Excluded[/]: {len(rec.excluded)} recipes" + (f", by rule: {detail}" if detail else ""),
        highlight=False,
    )

    if rec.pipelines:
        pt = Table(title="Pipelines (stacks across phases, in application order)")
        for col in ("#", "stack", "engine", "score", "weights + KV GB", "fits", "quality drop (upper bound)"):
            pt.add_column(col, overflow="fold")
        for i, p in enumerate(rec.pipelines, 1):
            est = p.estimate
            drop = est.quality_drop_pct
            pt.add_row(
                str(i),
                escape(
                    " → ".join(f"{r.id} ({m.phase.value})" for r, m in zip(p.recipes, p.methods, strict=True))
                ),
                escape(", ".join(p.engines[:2])),
                f"{p.score:.2f}",
                f"{_fmt_gb(est.memory.weights_gb)} + {_fmt_gb(est.memory.kv_cache_gb)}",
                "—" if est.fits is None else ("yes" if est.fits else "no"),
                "unknown" if drop is None else f"{drop:.2f}%",
            )
        _out.print(pt)
    else:
        _out.print("[bold]Pipelines[/]: none pass the constraints.")


def _print_commands(r: Any) -> None:
    cmds = r.commands
    _out.print(f"[bold]{escape(r.id)}[/] ({escape(r.recipe.name)}): {escape(r.recipe.config_text())}")
    if cmds.get("compress"):
        _out.print(f"  produce (Shrinkwise): {escape(cmds['compress'])}", highlight=False, soft_wrap=True)
    if cmds.get("produce"):
        _out.print(f"  produce: {escape(cmds['produce'])}", highlight=False, soft_wrap=True)
    if not cmds.get("compress") and not cmds.get("produce"):
        _out.print("  produce: nothing to write; applied when the engine loads the model", highlight=False)
    for engine, cmd in list(cmds.get("serve", {}).items())[:2]:
        _out.print(f"  serve ({escape(engine)}): {escape(cmd)}", highlight=False, soft_wrap=True)


def _print_nothing_fits(nf: dict[str, Any]) -> None:
    _out.print("[bold red]Nothing fits these constraints.[/]")
    small = nf.get("smallest")
    if small:
        _out.print(
            f"  Smallest footprint of a recipe that runs here: {small['recipe']} at {small['memory_gb']:.1f} GB "
            f"(weights {small['weights_gb']:.1f} + KV cache {small['kv_cache_gb']:.1f})",
            highlight=False,
        )
    for relax in nf.get("relaxations", []):
        _out.print(f"  With {relax['change']}: {relax['recipe']} would be recommended", highlight=False)
