"""The recommendation as a Markdown report, for the Recommend page's download button.

It is written from the JSON form of a recommendation (``Recommendation.to_dict()``), the same document
``shrinkwise recommend --json`` prints, so the web report and the CLI's output say the same things.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def pipeline_ids(pipeline: Mapping[str, Any]) -> list[str]:
    """Method ids of one pipeline in lifecycle order, whichever key the engine uses for its steps
    (a pipeline of recipes lists its recipes under ``recipes`` and their methods under ``methods``)."""
    steps = pipeline.get("methods") or pipeline.get("steps") or pipeline.get("stack") or []
    return [s if isinstance(s, str) else str(s.get("id") or s.get("method")) for s in steps]


def _fmt_pct(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.1f}%"


def _fmt_gb(x: Any) -> str:
    return "n/a" if x is None else f"{float(x):.2f} GB"


def to_markdown(
    doc: Mapping[str, Any], name: Callable[[str], str] = str, link: str | None = None, top: int = 10
) -> str:
    """A readable report: the constraints, the top ``top`` recipes with their configuration, format,
    engine, commands, estimates and reasons, the pipelines and every excluded recipe with why."""
    c = doc.get("constraints", {})
    out = ["# Shrinkwise recommendation", ""]
    if link:
        out += [f"Reopen it: <{link}>", ""]
    out += ["## Constraints", ""]
    out += [f"- **{k}**: {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in c.items()]
    ranked = list(doc.get("ranked", []))
    out += ["", f"## Ranked recipes (top {min(top, len(ranked))} of {len(ranked)})", ""]
    for i, r in enumerate(ranked[:top], 1):
        est = r.get("estimate") or {}
        fits = est.get("fits")
        fit_txt = "" if fits is None else (" (fits the budget)" if fits else " (**over the budget**)")
        quality = est.get("quality") or {}
        drop = est.get("quality_drop_pct")
        label = r.get("name") or name(r["id"])
        method = r.get("method")
        out += [
            f"### {i}. {label} (`{r['id']}`), score {float(r.get('score', 0)):.2f}",
            "",
            f"- method: {name(method) if method else 'n/a'}; configuration: "
            + (
                ", ".join(
                    f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                    for k, v in (r.get("config") or {}).items()
                )
                or "default"
            ),
            f"- format: {r.get('format', 'n/a')}; engine: {r.get('engine') or 'n/a'}",
            f"- memory: {_fmt_gb(est.get('memory_gb'))}{fit_txt} = weights {_fmt_gb(est.get('weights_gb'))} "
            f"+ KV cache {_fmt_gb(est.get('kv_cache_gb'))}",
            "- expected quality drop: "
            + ("unknown (no evidence)" if drop is None else _fmt_pct(drop))
            + f" ({quality.get('note') or est.get('quality_note') or est.get('quality_basis') or 'no basis given'})",
        ]
        for ev in est.get("evidence") or []:
            out.append(
                f"  - evidence: {ev.get('model')}, {ev.get('setting')}: {ev.get('metric')} "
                f"{ev.get('value')} vs {ev.get('baseline')} ({ev.get('source')})"
            )
        cmds = r.get("commands") or {}
        for key in ("compress", "produce"):
            if cmds.get(key):
                out.append(f"- produce{' (Shrinkwise)' if key == 'compress' else ''}: `{cmds[key]}`")
        for engine, cmd in (cmds.get("serve") or {}).items():
            out.append(f"- serve ({engine}): `{cmd}`")
        out.append("- why:")
        for reason in r.get("reasons", []):
            out.append(f"  - {_reason_line(reason)}")
        out.append("")
    pipes = list(doc.get("pipelines", []))
    if pipes:
        out += ["## Pipelines (methods stacked across the lifecycle)", ""]
        for i, p in enumerate(pipes, 1):
            est = p.get("estimate") or {}
            steps = " → ".join(name(x) for x in pipeline_ids(p))
            out.append(
                f"{i}. {steps}: {_fmt_gb(est.get('memory_gb'))}, "
                f"~{_fmt_pct(est.get('quality_drop_pct'))} quality drop"
            )
        out.append("")
    excluded = list(doc.get("excluded", []))
    out += [f"## Excluded recipes ({len(excluded)})", ""]
    for e in excluded:
        why = "; ".join(_reason_text(r) for r in e.get("reasons", []))
        out.append(f"- **{e.get('name') or name(e['id'])}** (`{e['id']}`): {why}")
    out.append("")
    return "\n".join(out)


def _reason_text(reason: Any) -> str:
    if isinstance(reason, Mapping):
        return str(reason.get("text") or reason.get("description") or reason.get("rule_id"))
    return str(reason)


def _reason_line(reason: Any) -> str:
    if not isinstance(reason, Mapping):
        return str(reason)
    weight = reason.get("weight")
    effect = reason.get("effect")
    sign = ""
    if isinstance(weight, (int, float)) and effect != "exclude":
        sign = f" ({weight:+.2f})"
    src = f" [{reason['source']}]" if reason.get("source") else ""
    return f"{_reason_text(reason)}{sign}{src}"
