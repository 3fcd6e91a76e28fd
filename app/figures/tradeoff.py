"""Trade-off charts of a recommendation's candidates.

``memory_quality_figure``: estimated weight memory after compression against the expected quality drop,
with the user's memory budget and acceptable drop as lines: what lies in the lower-left box fits both.
``adaptivity_figure``: each candidate's place on the paper's central trade-off (predictability at 0,
adaptivity at 1, from ``engine.axes``) against its score, so one sees which side the constraints favour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

POINT_TRACE = "candidate"


@dataclass(frozen=True)
class Candidate:
    method_id: str
    name: str
    family: str
    impact: str
    score: float
    memory_gb: float | None
    quality_drop_pct: float | None
    adaptivity: float
    rank: int


IMPACT_STYLE = {"static": ("square", "#1f77b4"), "dynamic": ("circle", "#2ca02c")}


def _ranks(ranks: Sequence[int]) -> str:
    """[1, 2, 3, 5] -> '1-3,5': the ranks of candidates drawn as one marker."""
    ranks = sorted(ranks)
    out, start = [], ranks[0]
    for prev, cur in zip(ranks, ranks[1:] + [None]):
        if cur != prev + 1 if cur is not None else True:
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ",".join(out)


#: Candidates closer than this share of the axis range (x, y) would cover each other on screen.
_NEAR = (1 / 40, 1 / 20)


def _points(
    fig: go.Figure, cands: Sequence[Candidate], x, y, hover, span: tuple[float, float] | None = None
) -> None:
    """Candidates as markers, static squares and dynamic circles; candidates that would cover each
    other on screen are drawn as one bigger marker whose label lists their ranks."""
    if not cands:
        return
    xs, ys = [x(c) for c in cands], [y(c) for c in cands]
    # The axes' spans decide what "near" means on screen (pass them when lines widen the axes).
    sx, sy = span or (max(xs) - min(xs), max(ys) - min(ys))
    bx = max(sx, 1e-9) * _NEAR[0]
    by = max(sy, 1e-9) * _NEAR[1]
    for impact, (symbol, colour) in IMPACT_STYLE.items():
        groups: list[list[Candidate]] = []
        for c in cands:  # greedy: join the first group whose first member is near enough
            if c.impact != impact:
                continue
            for g in groups:
                if abs(x(g[0]) - x(c)) < bx and abs(y(g[0]) - y(c)) < by:
                    g.append(c)
                    break
            else:
                groups.append([c])
        if not groups:
            continue
        items = [((sum(x(c) for c in g) / len(g), sum(y(c) for c in g) / len(g)), g) for g in groups]
        fig.add_trace(
            go.Scatter(
                x=[k[0] for k, _ in items],
                y=[k[1] for k, _ in items],
                mode="markers+text",
                meta=POINT_TRACE,
                name=impact,
                text=[_ranks([c.rank for c in g]) for _, g in items],
                textposition="middle right",
                textfont=dict(size=11),
                customdata=[[c.method_id for c in g] for _, g in items],
                hovertext=["<br>".join(hover(c) for c in g) for _, g in items],
                hovertemplate="%{hovertext}<extra></extra>",
                marker=dict(
                    size=[12 + 3 * min(len(g), 6) for _, g in items],
                    symbol=symbol,
                    color=colour,
                    opacity=0.85,
                    line=dict(color="white", width=1),
                ),
            )
        )


def memory_quality_figure(
    cands: Sequence[Candidate], memory_budget: float | None, max_drop: float, original_gb: float | None = None
) -> go.Figure:
    """Memory after compression (x) vs expected quality drop (y); the label of a marker is its rank."""
    shown = [c for c in cands if c.memory_gb is not None and c.quality_drop_pct is not None]
    fig = go.Figure()
    # Both axes start at zero and reach the budget, the acceptable drop and the original's size.
    span = (
        max([c.memory_gb for c in shown] + [memory_budget or 0, original_gb or 0, 1e-9]),
        max([c.quality_drop_pct for c in shown] + [max_drop, 1e-9]),
    )
    _points(
        fig,
        shown,
        lambda c: c.memory_gb,
        lambda c: c.quality_drop_pct,
        lambda c: f"#{c.rank} <b>{c.name}</b><br>{c.memory_gb:.2f} GB · ~{c.quality_drop_pct:.1f}% drop",
        span=span,
    )
    if memory_budget:
        fig.add_vline(
            x=memory_budget,
            line=dict(color="#d62728", dash="dash"),
            annotation_text=f"budget {memory_budget:g} GB",
            annotation_position="top",
        )
    fig.add_hline(
        y=max_drop,
        line=dict(color="#d98c00", dash="dot"),
        annotation_text=f"acceptable drop {max_drop:g}%",
        annotation_position="top left",
    )
    if original_gb:
        # No label on this line: the markers of dynamic methods (weights untouched) sit on it.
        fig.add_vline(x=original_gb, line=dict(color="gray", dash="dot", width=1))
    fig.update_layout(
        height=420,
        margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", y=1.08, x=0),
        xaxis=dict(title="weights after compression (GB)", rangemode="tozero"),
        yaxis=dict(title="expected quality drop (%)", rangemode="tozero"),
    )
    return fig


def adaptivity_figure(cands: Sequence[Candidate]) -> go.Figure:
    """Place on the trade-off (x: 0 predictable … 1 adaptive) vs score (y)."""
    fig = go.Figure()
    scores = [c.score for c in cands] or [0.0]
    _points(
        fig,
        cands,
        lambda c: c.adaptivity,
        lambda c: c.score,
        lambda c: f"#{c.rank} <b>{c.name}</b><br>score {c.score:.2f} · adaptivity {c.adaptivity:.2f}",
        span=(1.2, max(scores) - min(scores)),
    )
    fig.update_layout(
        height=420,
        margin=dict(l=10, r=10, t=30, b=10),
        legend=dict(orientation="h", y=1.08, x=0),
        xaxis=dict(
            title="← predictable (static, early phase)   ·   adaptive (dynamic, near inference) →",
            range=[-0.08, 1.12],
            tickvals=[0, 0.25, 0.5, 0.75, 1],
        ),
        yaxis=dict(title="score"),
    )
    return fig
