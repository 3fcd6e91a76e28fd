"""Size vs quality of the runs measured on one model, with the Pareto front marked.

Each succeeded run is a marker at (size on disk after compression, perplexity change vs the same model
before compression, in percent). A run is on the Pareto front when no other run is at least as small
*and* at least as good with one of the two strictly better: those are the runs worth choosing between;
every other run is beaten by one on the front. The uncompressed model is drawn at 0% for reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

RUN_TRACE = "runs"
FRONT_TRACE = "pareto"
ORIGINAL_TRACE = "original"


@dataclass(frozen=True)
class RunPoint:
    run_id: int
    method: str
    settings: str
    size_mb: float
    ppl_change_pct: float
    perplexity: float
    bits_per_weight: float | None = None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points when both coordinates are to be minimised, sorted by x.

    Duplicates of a front point are all on the front (neither dominates the other).
    """
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            (x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def points_from_runs(runs: Sequence[object]) -> tuple[list[RunPoint], float | None]:
    """RunPoints of the succeeded runs that have perplexity and size before and after; plus the original
    model's size (MB) from their 'before' measurements."""
    pts, original = [], None
    for r in runs:
        b, a = getattr(r, "before_metrics", {}) or {}, getattr(r, "after_metrics", {}) or {}
        if str(getattr(r, "status", "")) not in ("succeeded", "RunStatus.SUCCEEDED"):
            continue
        if not (b.get("perplexity") and a.get("perplexity") and a.get("size_bytes")):
            continue
        if b.get("size_bytes"):
            original = b["size_bytes"] / 1e6
        cfg = getattr(r, "config", {}) or {}
        pts.append(
            RunPoint(
                run_id=int(r.id),
                method=str(getattr(r, "compressor", "")),
                settings=", ".join(f"{k}={v}" for k, v in cfg.items()),
                size_mb=a["size_bytes"] / 1e6,
                ppl_change_pct=100.0 * (a["perplexity"] - b["perplexity"]) / b["perplexity"],
                perplexity=float(a["perplexity"]),
                bits_per_weight=a.get("bits_per_weight"),
            )
        )
    return pts, original


def size_quality_figure(
    points: Sequence[RunPoint], original_size_mb: float | None = None, title: str = ""
) -> go.Figure:
    """Markers for every run (coloured by method), the Pareto front as a line, the original at 0%."""
    fig = go.Figure()
    methods = sorted({p.method for p in points})
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]
    for k, m in enumerate(methods):
        mine = [p for p in points if p.method == m]
        fig.add_trace(
            go.Scatter(
                x=[p.size_mb for p in mine],
                y=[p.ppl_change_pct for p in mine],
                mode="markers",
                name=m,
                meta=RUN_TRACE,
                marker=dict(size=11, color=palette[k % len(palette)], line=dict(width=1, color="white")),
                customdata=[
                    [
                        p.run_id,
                        p.settings,
                        p.perplexity,
                        p.bits_per_weight if p.bits_per_weight is not None else float("nan"),
                    ]
                    for p in mine
                ],
                hovertemplate=(
                    "run #%{customdata[0]} " + m + "<br>%{customdata[1]}<br>size %{x:.1f} MB, "
                    "perplexity %{customdata[2]:.3f} (%{y:+.2f}%)<br>bits/weight %{customdata[3]:.2f}"
                    "<extra></extra>"
                ),
            )
        )
    front = [points[i] for i in pareto_front([(p.size_mb, p.ppl_change_pct) for p in points])]
    if front:
        fig.add_trace(
            go.Scatter(
                x=[p.size_mb for p in front],
                y=[p.ppl_change_pct for p in front],
                mode="lines+markers",
                name="Pareto front",
                meta=FRONT_TRACE,
                customdata=[[p.run_id] for p in front],
                line=dict(color="#1b1f24", width=1.5, dash="dot", shape="hv"),
                marker=dict(size=18, symbol="circle-open", color="#1b1f24", line=dict(width=2)),
                hovertemplate="on the Pareto front: run #%{customdata[0]}<extra></extra>",
            )
        )
    if original_size_mb:
        fig.add_trace(
            go.Scatter(
                x=[original_size_mb],
                y=[0.0],
                mode="markers+text",
                name="original",
                meta=ORIGINAL_TRACE,
                marker=dict(size=12, symbol="star", color="#555555"),
                text=["original"],
                textposition="top center",
                hovertemplate="uncompressed model: %{x:.1f} MB<extra></extra>",
            )
        )
    fig.update_layout(
        title=title or None,
        height=440,
        margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        xaxis_title="size on disk after compression (MB)",
        yaxis_title="perplexity change vs original (%)",
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        hovermode="closest",
    )
    fig.add_hline(y=0, line=dict(color="#999999", width=1))
    return fig
