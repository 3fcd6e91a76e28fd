"""A sweep's charts: the measured Pareto front beside the recommender's predicted points (issue 14).

Size view: x is the whole model's stored bits per weight (or the weights' size), y the quality drop (the
perplexity rise over the same model before compression, percent). Each recipe has a filled marker where
it was measured and an open diamond where the recommender predicted it, with the predicted range as an
error bar and a thin line from prediction to measurement, so a reader sees how far each prediction was
off. The measured Pareto front is a stepped line; the recipe the user's limits select is ringed; the
quality limit is a horizontal line.

Speed view: x is the measured decode speed (tokens/s on this machine), higher is better; the recommender
predicts no speed, so only measurements are drawn (and the original's speed for reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

MEASURED_TRACE = "measured"
PREDICTED_TRACE = "predicted"
FRONT_TRACE = "pareto"
SELECTED_TRACE = "selected"
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]

#: x-axis choices of the size view: (label, measured point attribute, predicted key, scale to the unit)
SIZE_AXES: dict[str, tuple[str, str, str, float]] = {
    "bits": ("stored bits per weight, whole model", "bits_per_weight", "bits_per_weight", 1.0),
    "size": ("weights on disk (MB)", "size_bytes", "weights_gb", 1000.0),
}


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _x_measured(p: Any, attr: str) -> float | None:
    v = getattr(p, attr)
    if v is None:
        return None
    return float(v) / 1e6 if attr == "size_bytes" else float(v)


def pareto_figure(
    recipes: Sequence[tuple[str, str]],
    points: Sequence[Any],
    predicted: Mapping[str, Mapping[str, Any]],
    front: Sequence[Any],
    selected: Any | None,
    max_quality_drop: float | None,
    axis: str = "bits",
) -> go.Figure:
    """The size view. ``recipes``: (recipe id, name) in the sweep's order (one colour each); ``points``:
    :class:`jobs.sweeps.MeasuredPoint`; ``predicted``: recipe id -> the stored predicted point."""
    label, attr, pkey, scale = SIZE_AXES[axis]
    fig = go.Figure()
    measured = {p.recipe: p for p in points}
    for i, (rid, name) in enumerate(recipes):
        colour = _colour(i)
        pred = predicted.get(rid) or {}
        px, py = pred.get(pkey), pred.get("quality_drop_pct")
        m = measured.get(rid)
        mx = _x_measured(m, attr) if m is not None else None
        if px is not None and py is not None:
            lo, hi = pred.get("low_pct"), pred.get("high_pct")
            fig.add_trace(
                go.Scatter(
                    x=[float(px) * scale],
                    y=[float(py)],
                    mode="markers",
                    name=f"{name} (predicted)",
                    legendgroup=rid,
                    meta=PREDICTED_TRACE,
                    customdata=[[rid]],
                    marker=dict(size=12, symbol="diamond-open", color=colour, line=dict(width=2)),
                    error_y=dict(
                        type="data",
                        symmetric=False,
                        array=[max(0.0, float(hi) - float(py))] if hi is not None else [0.0],
                        arrayminus=[max(0.0, float(py) - float(lo))] if lo is not None else [0.0],
                        color=colour,
                        thickness=1.5,
                        width=6,
                    ),
                    hovertemplate=f"{name}<br>predicted: %{{y:+.2f}}% "
                    + (f"({float(lo):+.2f} to {float(hi):+.2f})" if lo is not None and hi is not None else "")
                    + "<br>x %{x:.3g}<extra></extra>",
                )
            )
            if m is not None and mx is not None:
                fig.add_trace(
                    go.Scatter(
                        x=[float(px) * scale, mx],
                        y=[float(py), m.quality_drop_pct],
                        mode="lines",
                        line=dict(color=colour, width=1, dash="dot"),
                        showlegend=False,
                        legendgroup=rid,
                        hoverinfo="skip",
                    )
                )
        if m is not None and mx is not None:
            fig.add_trace(
                go.Scatter(
                    x=[mx],
                    y=[m.quality_drop_pct],
                    mode="markers",
                    name=f"{name} (measured)",
                    legendgroup=rid,
                    meta=MEASURED_TRACE,
                    customdata=[[rid, m.perplexity_after]],
                    marker=dict(size=13, color=colour, line=dict(width=1, color="white")),
                    hovertemplate=f"{name}<br>measured: %{{y:+.2f}}% (perplexity %{{customdata[1]:.3f}})"
                    "<br>x %{x:.3g}<extra></extra>",
                )
            )
    on_front = [(x, p) for p in front if (x := _x_measured(p, attr)) is not None]
    if on_front:
        on_front.sort(key=lambda t: (t[0], t[1].quality_drop_pct))
        fig.add_trace(
            go.Scatter(
                x=[x for x, _ in on_front],
                y=[p.quality_drop_pct for _, p in on_front],
                mode="lines",
                name="measured Pareto front",
                meta=FRONT_TRACE,
                customdata=[[p.recipe] for _, p in on_front],
                line=dict(color="#1b1f24", width=1.5, dash="dash", shape="hv"),
                hoverinfo="skip",
            )
        )
    if selected is not None and (sx := _x_measured(selected, attr)) is not None:
        fig.add_trace(
            go.Scatter(
                x=[sx],
                y=[selected.quality_drop_pct],
                mode="markers+text",
                name="chosen by your limits",
                meta=SELECTED_TRACE,
                customdata=[[selected.recipe]],
                text=["chosen"],
                textposition="top center",
                marker=dict(size=26, symbol="circle-open", color="#1b1f24", line=dict(width=2.5)),
                hovertemplate=f"chosen by your limits: {selected.name}<extra></extra>",
            )
        )
    if max_quality_drop is not None:
        fig.add_hline(
            y=float(max_quality_drop),
            line=dict(color="#ff7f0e", width=1.5, dash="dash"),
            annotation_text=f"your limit: {float(max_quality_drop):g}% drop",
            annotation_position="top left",
        )
    fig.add_hline(y=0, line=dict(color="#999999", width=1))
    fig.update_layout(
        height=480,
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title=label,
        yaxis_title="quality drop: perplexity rise vs the original (%)",
        legend=dict(orientation="h", yanchor="top", y=-0.15, x=0),
        hovermode="closest",
    )
    return fig


def speed_figure(
    recipes: Sequence[tuple[str, str]],
    points: Sequence[Any],
    front: Sequence[Any],
    original_decode: float | None,
    max_quality_drop: float | None,
) -> go.Figure:
    """The speed view: measured decode tokens/s against quality drop, the speed front, the original."""
    fig = go.Figure()
    measured = {p.recipe: p for p in points}
    for i, (rid, name) in enumerate(recipes):
        m = measured.get(rid)
        if m is None or not m.decode_tokens_per_s:
            continue
        fig.add_trace(
            go.Scatter(
                x=[m.decode_tokens_per_s],
                y=[m.quality_drop_pct],
                mode="markers",
                name=name,
                meta=MEASURED_TRACE,
                customdata=[[rid]],
                marker=dict(size=13, color=_colour(i), line=dict(width=1, color="white")),
                hovertemplate=f"{name}<br>%{{x:.1f}} tokens/s, %{{y:+.2f}}%<extra></extra>",
            )
        )
    fast = sorted((p for p in front if p.decode_tokens_per_s), key=lambda p: -(p.decode_tokens_per_s or 0))
    if fast:
        fig.add_trace(
            go.Scatter(
                x=[p.decode_tokens_per_s for p in fast],
                y=[p.quality_drop_pct for p in fast],
                mode="lines",
                name="measured Pareto front",
                meta=FRONT_TRACE,
                line=dict(color="#1b1f24", width=1.5, dash="dash", shape="hv"),
                hoverinfo="skip",
            )
        )
    if original_decode:
        fig.add_trace(
            go.Scatter(
                x=[original_decode],
                y=[0.0],
                mode="markers+text",
                name="original",
                marker=dict(size=12, symbol="star", color="#555555"),
                text=["original"],
                textposition="top center",
                hovertemplate="uncompressed: %{x:.1f} tokens/s<extra></extra>",
            )
        )
    if max_quality_drop is not None:
        fig.add_hline(y=float(max_quality_drop), line=dict(color="#ff7f0e", width=1.5, dash="dash"))
    fig.add_hline(y=0, line=dict(color="#999999", width=1))
    fig.update_layout(
        height=440,
        margin=dict(l=10, r=10, t=10, b=10),
        xaxis_title="decode speed on this machine (tokens/s, higher is better)",
        yaxis_title="quality drop: perplexity rise vs the original (%)",
        legend=dict(orientation="h", yanchor="top", y=-0.15, x=0),
        hovermode="closest",
    )
    return fig
