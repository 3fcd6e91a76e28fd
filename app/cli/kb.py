"""``shrinkwise kb``: browse, check and load the knowledge base from the terminal.

::

    shrinkwise kb list [--paper-only] [--phase P] [--impact I] [--family F] [--json]
    shrinkwise kb show ID [--json]
    shrinkwise kb gaps [--json]
    shrinkwise kb validate [PATH]
    shrinkwise kb load

Human output is a rich table; ``--json`` prints one JSON document on stdout. Exit codes: 0 fine,
1 invalid data (the messages name file, entry and field), 2 bad command-line input (unknown id,
bad option value; the message lists what is allowed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from knowledge.schema import Evidence, Family, Impact, Method, Phase, _StrEnum

if TYPE_CHECKING:  # the catalog module is imported lazily (the CLI starts faster without it)
    from knowledge.catalog import Catalog

kb_app = typer.Typer(
    name="kb",
    help="Browse, validate and load the knowledge base (methods, evidence, hardware, formats).",
    no_args_is_help=True,
)

_out = Console(soft_wrap=True)  # messages are not wrapped: paths and ids stay copyable
_err = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add the ``kb`` sub-commands to the main ``shrinkwise`` app."""
    app.add_typer(kb_app, name="kb")


# ---------------------------------------------------------------------------------------------------
# helpers


def _choice(value: str | None, enum: type[_StrEnum], option: str) -> str | None:
    """Check an option against an enum; a bad value exits 2 with the allowed values."""
    if value is None:
        return None
    allowed = enum.values()
    if value not in allowed:
        import difflib

        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise typer.BadParameter(f"{value!r} is not one of: {', '.join(allowed)}{hint}", param_hint=option)
    return value


def _catalog(include_measured: bool = True) -> Catalog:
    """The catalog, or exit 1 with the data problems when a data file is invalid."""
    from knowledge.catalog import load_catalog
    from knowledge.loader import DataFileError

    try:
        return load_catalog(include_measured=include_measured)
    except DataFileError as exc:
        _err.print("[bold red]The knowledge base's data files are invalid:[/]")
        for p in exc.problems:
            _err.print(f"  {p}", markup=False, highlight=False)
        raise typer.Exit(1) from None


def _emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def _evidence_dict(e: Evidence) -> dict[str, Any]:
    d = e.model_dump(mode="json")
    d["relative_change"] = e.relative_change
    d["measured_here"] = e.measured_here
    return d


def _method_summary(m: Method, n_evidence: int) -> dict[str, Any]:
    return {
        "id": m.id,
        "name": m.name,
        "family": m.family.value,
        "phase": m.phase.value,
        "impact": m.impact.value,
        "in_paper": m.in_paper,
        "fills_gap": m.fills_gap,
        "grades": m.grades.model_dump(mode="json"),
        "compressor": m.compressor,
        "summary": m.summary,
        "evidence_rows": n_evidence,
    }


def _fmt_change(e: Evidence) -> str:
    rc = e.relative_change
    if rc is None:
        return ""
    return f"{rc * 100:+.1f}%"


# ---------------------------------------------------------------------------------------------------
# commands


@kb_app.command("list")
def list_methods(
    paper_only: bool = typer.Option(False, "--paper-only", help="Only the paper's eight methods (Table 1)."),
    phase: str | None = typer.Option(None, "--phase", help=f"One of: {', '.join(Phase.values())}."),
    impact: str | None = typer.Option(None, "--impact", help=f"One of: {', '.join(Impact.values())}."),
    family: str | None = typer.Option(None, "--family", help=f"One of: {', '.join(Family.values())}."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """List the methods, optionally filtered by phase, impact, family or the paper's set."""
    phase = _choice(phase, Phase, "--phase")
    impact = _choice(impact, Impact, "--impact")
    family = _choice(family, Family, "--family")
    cat = _catalog()
    methods = cat.filter(paper_only=paper_only, phase=phase, impact=impact, family=family)
    counts = {m.id: len(cat.evidence_for(m.id)) for m in methods}
    if as_json:
        _emit_json(
            {
                "count": len(methods),
                "filters": {"paper_only": paper_only, "phase": phase, "impact": impact, "family": family},
                "methods": [_method_summary(m, counts[m.id]) for m in methods],
            }
        )
        return
    # a narrow terminal gets the essentials; the grades and names need about 150 columns
    wide = _out.width >= 150
    table = Table(title=f"{len(methods)} of {len(cat.methods)} methods", show_lines=False)
    columns = (
        ["id"]
        + (["name"] if wide else [])
        + ["family", "phase", "impact"]
        + (["size", "quality drop", "hw dep."] if wide else [])
        + ["evidence"]
    )
    for col in columns:
        table.add_column(col, no_wrap=col != "name", overflow="ellipsis")
    for m in methods:
        mark = " *" if m.in_paper else (" +" if m.fills_gap else "")
        grades = [
            m.grades.size_reduction.value,
            m.grades.quality_drop.value,
            m.grades.hardware_dependence.value,
        ]
        cells = (
            [m.id + mark]
            + ([m.name] if wide else [])
            + [m.family.value, m.phase.value, m.impact.value]
            + (grades if wide else [])
            + [str(counts[m.id]) if counts[m.id] else ""]
        )
        table.add_row(*cells)
    _out.print(table)
    _out.print("* one of the paper's eight   + fills the paper's gap (dynamic at pre-/post-training)")


@kb_app.command("show")
def show(
    method_id: str = typer.Argument(..., metavar="ID", help="Method id, e.g. gptq (see `kb list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Every field of one method, and its evidence rows."""
    cat = _catalog()
    if method_id not in cat.methods:
        close = cat.suggest(method_id)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        _err.print(
            f"Unknown method id {method_id!r}.{hint} `shrinkwise kb list` shows all {len(cat.methods)} ids.",
            markup=False,
            highlight=False,
        )
        raise typer.Exit(2)
    m = cat.method(method_id)
    evidence = cat.evidence_for(method_id)
    if as_json:
        _emit_json({"method": m.model_dump(mode="json"), "evidence": [_evidence_dict(e) for e in evidence]})
        return
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    rows: list[tuple[str, str]] = [
        ("id", m.id),
        ("name", m.name),
        ("family", m.family.value),
        (
            "cell",
            f"{m.phase.value} / {m.impact.value}"
            + (" (the paper's set)" if m.in_paper else "")
            + (" (fills the paper's gap)" if m.fills_gap else ""),
        ),
        (
            "grades",
            ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in m.grades.model_dump(mode="json").items()),
        ),
        ("changes", ", ".join(c.value for c in m.changes)),
        ("bits", ", ".join(f"{b:g}" for b in m.bits) if m.bits else "-"),
        (
            "footprint",
            ", ".join(f"{k}={v}" for k, v in m.footprint.model_dump(mode="json").items() if v is not None),
        ),
        (
            "requires",
            ", ".join(f"{k}={v}" for k, v in m.requirements.model_dump(mode="json").items() if v is not None),
        ),
        (
            "hardware",
            "; ".join(
                h.target.value + (f" ({', '.join(h.kernels)})" if h.kernels else "") for h in m.hardware
            ),
        ),
        (
            "formats",
            "; ".join(
                f.format + (f" -> {', '.join(e.value for e in f.engines)}" if f.engines else "")
                for f in m.formats
            )
            or "-",
        ),
        ("composes with", ", ".join(m.composes_with) or "-"),
        ("excludes", ", ".join(m.excludes) or "-"),
        ("compressor", m.compressor or "- (none bundled)"),
        ("summary", m.summary),
        ("mechanism", m.mechanism),
        ("trade-off", m.tradeoff),
        (
            "citation",
            f"{m.citation.authors}. {m.citation.title}. {m.citation.venue}, {m.citation.year}. "
            f"{m.citation.url}",
        ),
    ]
    if m.aliases:
        rows.insert(2, ("aliases", ", ".join(m.aliases)))
    for k, v in rows:
        head.add_row(k, v)
    _out.print(head)
    if not evidence:
        _out.print("\nNo evidence rows for this method yet.")
        return
    if _out.width < 150:  # a table of eight columns is unreadable here: one block per row instead
        _out.print(f"\n[bold]Evidence ({len(evidence)} rows)[/]")
        for e in evidence:
            base = (
                ""
                if e.baseline is None
                else f" vs {e.baseline:g}" + (f" {e.baseline_label}" if e.baseline_label else "")
            )
            change = f" ({_fmt_change(e)})" if e.relative_change is not None else ""
            _out.print(
                f"- {e.model}, {e.setting}: {e.metric.value}"
                f"{' on ' + e.dataset if e.dataset else ''} = {e.value:g}{base}{change}",
                markup=False,
            )
            _out.print(
                f"    {e.source.paper}, {e.source.locator} [{e.source.tag.value}]",
                markup=False,
                highlight=False,
            )
        return
    table = Table(title=f"Evidence ({len(evidence)} rows)")
    for col in ("model", "setting", "metric", "dataset", "value", "baseline", "change", "source"):
        table.add_column(col)
    for e in evidence:
        base = (
            ""
            if e.baseline is None
            else f"{e.baseline:g}" + (f" ({e.baseline_label})" if e.baseline_label else "")
        )
        src = f"{e.source.paper}, {e.source.locator} [{e.source.tag.value}]"
        table.add_row(
            e.model, e.setting, e.metric.value, e.dataset or "", f"{e.value:g}", base, _fmt_change(e), src
        )
    _out.print(table)


@kb_app.command("gaps")
def gaps(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """The phase x impact grid: the paper's methods and all methods per cell, and the paper's gaps."""
    from engine.gaps import gap_report

    report = gap_report(_catalog())
    if as_json:
        _emit_json(report.to_dict())
        return
    table = Table(title="Phase x impact: the paper's set vs the knowledge base")
    for col in ("phase", "impact", "paper's methods", "all methods", "paper gap?", "filled now by"):
        table.add_column(col)
    for c in report.cells:
        table.add_row(
            c.phase.value,
            c.impact.value,
            ", ".join(c.paper_methods) or "-",
            str(len(c.all_methods)),
            "GAP" if c.is_paper_gap else "",
            ", ".join(c.fillers) if c.is_paper_gap else "",
        )
    _out.print(table)


@kb_app.command("validate")
def validate(
    path: Path | None = typer.Argument(
        None, help="A methods/evidence/hardware/formats/recipes YAML file; default: every bundled data file."
    ),
) -> None:
    """Check data files against the schema and each other; exit 1 with precise messages if invalid."""
    from knowledge.loader import DataFileError, load_all, validate_file

    try:
        if path is None:
            data = load_all()
            warnings = data.warnings
            summary = (
                f"OK: {len(data.files)} files, {len(data.methods)} methods, {len(data.evidence)} evidence "
                f"rows, {len(data.hardware)} hardware targets, {len(data.formats)} formats, "
                f"{len(data.engines)} serving engines, {len(data.recipes)} recipes"
            )
        else:
            report = validate_file(path)
            warnings = report.warnings
            summary = str(report)
    except DataFileError as exc:
        _err.print(f"[bold red]{len(exc.problems)} problem(s) found:[/]")
        for p in exc.problems:
            _err.print(f"  {p}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    for w in warnings:
        _err.print(f"warning: {w}", markup=False, highlight=False)
    _out.print(summary, markup=False, highlight=False)


@kb_app.command("load")
def load() -> None:
    """Create the database tables and load the data files into them (idempotent; keeps measured runs)."""
    from knowledge import db
    from knowledge.loader import DataFileError

    url = db.database_url()
    try:
        report = db.sync_catalog()
    except DataFileError as exc:
        _err.print("[bold red]Not loaded: the data files are invalid:[/]")
        for p in exc.problems:
            _err.print(f"  {p}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    except db.DatabaseFault as exc:  # damaged, or from a newer Shrinkwise: one line, what to do
        _err.print(f"shrinkwise: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # unreachable server, bad URL, permissions
        _err.print(f"Could not load the knowledge base into {db.describe_url(url)}: {exc}", markup=False)
        _err.print(f"Check {db.ENV_URL} (unset it to use the SQLite file in the data folder).", markup=False)
        raise typer.Exit(1) from None
    counts = db.counts()
    _out.print(f"Database: {db.describe_url(url)}", markup=False, highlight=False)
    _out.print(str(report), markup=False, highlight=False)
    _out.print(
        ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()), markup=False, highlight=False
    )
