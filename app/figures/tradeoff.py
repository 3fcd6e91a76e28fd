"""Trade-off charts of a recommendation's candidates.

``memory_quality_figure``: estimated weight memory after compression against the expected quality drop,
with the user's memory budget and acceptable drop as lines: what lies in the lower-left box fits both.
``adaptivity_figure``: each candidate's place on the paper's central trade-off (predictability at 0,
adaptivity at 1, from ``engine.axes``) against its score, so one sees which side the constraints favour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import plotly.graph_objects as go

from app.figures.palette import family_colour

POINT_TRACE = "candidate"


@dataclass(frozen=True)
class Candidate:
    method_id: str
    name: str
    family: str
    impact: str
    score: float
    memory_gb: Optional[float]
    quality_drop_pct: Optional[float]
    adaptivity: float
    rank: int


def _points(fig: go.Figure, cands: Sequence[Candidate], x, y, hover) -> None:
    for impact, symbol in (("static", "square"), ("dynamic", "circle")):
        group = [c for c in cands if c.impact == impact]
        if not group:
            continue
        fig.add_trace(go.Scatter(
            x=[x(c) for c in group], y=[y(c) for c in group], mode="markers+text", meta=POINT_TRACE,
            name=impact, text=[str(c.rank) for c in group], textposition="middle center",
            textfont=dict(size=9, color="white"), customdata=[c.method_id for c in group],
            hovertext=[hover(c) for c in group], hovertemplate="%{hovertext}<extra></extra>",
            marker=dict(size=22, symbol=symbol, color=[family_colour(c.family) for c in group],
                        line=dict(color="white", width=1)),
        ))


def memory_quality_figure(cands: Sequence[Candidate], memory_budget: Optional[float], max_drop: float,
                          original_gb: Optional[float] = None) -> go.Figure:
    """Memory after compression (x) vs expected quality drop (y); the number in a marker is its rank."""
    shown = [c for c in cands if c.memory_gb is not None and c.quality_drop_pct is not None]
    fig = go.Figure()
    _points(fig, shown, lambda c: c.memory_gb, lambda c: c.quality_drop_pct,
            lambda c: f"#{c.rank} <b>{c.name}</b><br>{c.memory_gb:.2f} GB · ~{c.quality_drop_pct:.1f}% drop")
    if memory_budget:
        fig.add_vline(x=memory_budget, line=dict(color="#d62728", dash="dash"),
                      annotation_text=f"budget {memory_budget:g} GB", annotation_position="top")
    fig.add_hline(y=max_drop, line=dict(color="#d98c00", dash="dot"),
                  annotation_text=f"acceptable drop {max_drop:g}%", annotation_position="right")
    if original_gb:
        fig.add_vline(x=original_gb, line=dict(color="gray", dash="dot"),
                      annotation_text="original (fp16)", annotation_position="bottom")
    fig.update_layout(
        height=420, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.08, x=0),
        xaxis=dict(title="weight memory after compression (GB)", rangemode="tozero"),
        yaxis=dict(title="expected quality drop (%)", rangemode="tozero"),
    )
    return fig


def adaptivity_figure(cands: Sequence[Candidate]) -> go.Figure:
    """Place on the trade-off (x: 0 predictable … 1 adaptive) vs score (y)."""
    fig = go.Figure()
    # Candidates at the same position and score would hide each other: nudge them apart sideways.
    seen: dict[tuple[float, float], int] = {}
    offsets = {}
    for c in cands:
        key = (round(c.adaptivity, 3), round(c.score, 1))
        offsets[c.method_id] = seen.get(key, 0) * 0.025
        seen[key] = seen.get(key, 0) + 1
    _points(fig, cands, lambda c: c.adaptivity + offsets[c.method_id], lambda c: c.score,
            lambda c: f"#{c.rank} <b>{c.name}</b><br>score {c.score:.2f} · adaptivity {c.adaptivity:.2f}")
    fig.update_layout(
        height=420, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.08, x=0),
        xaxis=dict(title="← predictable (static, early phase)   ·   adaptive (dynamic, near inference) →",
                   range=[-0.08, 1.12], tickvals=[0, 0.25, 0.5, 0.75, 1]),
        yaxis=dict(title="score"),
    )
    return fig
