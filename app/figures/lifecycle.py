"""The model's lifecycle with method stacks drawn on it: one row per pipeline, one column per phase.

A pipeline from the engine stacks compatible methods in lifecycle order (e.g. structural pruning at
fine-tuning, then 4-bit quantization after it, then token pruning at inference). Drawn across the four
phases, it shows at a glance which phases a stack touches and which it leaves alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from app.figures.palette import PHASE_LABELS, PHASES, family_colour, phase_index
from app.figures.phase_map import short_label

STEP_TRACE = "pipeline-step"


@dataclass(frozen=True)
class Step:
    method_id: str
    name: str
    phase: str
    family: str
    impact: str


@dataclass(frozen=True)
class PipelineView:
    """One stack as the figure needs it: a label (rank and combined estimate) and its steps in order."""

    label: str
    steps: tuple[Step, ...]
    detail: str = ""


def pipeline_figure(pipelines: Sequence[PipelineView], height_per_row: int = 150) -> go.Figure:
    """Phases as columns, pipelines as rows (best on top), each step a marker in its phase's column.

    Two steps of one pipeline in the same phase are stacked in the column (not side by side, so the
    names stay readable in a narrow window); the row's label sits above the row, not in a margin.
    """
    fig = go.Figure()
    n = len(pipelines)
    for i in range(len(PHASES)):
        fig.add_shape(
            type="rect",
            x0=i + 0.02,
            x1=i + 0.98,
            y0=-0.5,
            y1=n - 0.5,
            layer="below",
            line=dict(width=0),
            fillcolor="rgba(128,128,128,0.06)",
        )
    for row in range(1, n):
        fig.add_hline(y=n - 0.5 - row, line=dict(color="rgba(128,128,128,0.35)", width=1))
    for row, pipe in enumerate(pipelines):
        y = n - 1 - row
        per_phase: dict[str, list[Step]] = {}
        for s in pipe.steps:
            per_phase.setdefault(s.phase, []).append(s)
        xs, ys, names, colours, hover, symbols = [], [], [], [], [], []
        for s in pipe.steps:
            same = per_phase[s.phase]
            k = same.index(s)
            spread = min(0.36, 0.75 / max(1, len(same)))
            xs.append(phase_index(s.phase) + 0.5)
            ys.append(y + 0.1 - (k - (len(same) - 1) / 2) * spread)
            names.append(short_label(s.name, limit=18))
            colours.append(family_colour(s.family))
            symbols.append("square" if s.impact == "static" else "circle")
            hover.append(f"<b>{s.name}</b><br>{s.family} · {s.phase} · {s.impact}")
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines+markers+text",
                meta=STEP_TRACE,
                name=pipe.label,
                line=dict(color="rgba(90,90,90,0.5)", width=2),
                text=names,
                textposition="top center",
                textfont=dict(size=11),
                customdata=[s.method_id for s in pipe.steps],
                hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>",
                marker=dict(size=16, color=colours, symbol=symbols, line=dict(color="white", width=1)),
                showlegend=False,
            )
        )
        fig.add_annotation(
            x=0.02,
            y=y + 0.44,
            xanchor="left",
            yanchor="top",
            showarrow=False,
            text=f"<b>{pipe.label}</b>",
            font=dict(size=11),
        )
    fig.update_layout(
        height=max(180, 70 + height_per_row * n),
        margin=dict(l=10, r=10, t=10, b=10),
        dragmode=False,
        xaxis=dict(
            range=[0, 4],
            tickvals=[i + 0.5 for i in range(4)],
            side="top",
            fixedrange=True,
            ticktext=[PHASE_LABELS[p] for p in PHASES],
            showgrid=False,
            zeroline=False,
        ),
        yaxis=dict(
            range=[-0.5, n - 0.5], fixedrange=True, showgrid=False, showticklabels=False, zeroline=False
        ),
    )
    return fig
