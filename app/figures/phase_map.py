"""The paper's Figure 1 as an interactive plotly figure: phase of application x nature of impact.

Phases run left to right in lifecycle order, static methods sit in the upper row and dynamic ones in
the lower row (Bayazitov 2026, Figure 1). Every method is one marker inside its cell; markers are laid
out on a small grid inside the cell (``cell_positions``) so that none overlaps another, whatever the
number of methods in the cell. Colour is the method's family; the paper's own eight methods are drawn
as diamonds so they stay recognisable when the whole knowledge base is shown.

The figure is a pure function of the methods and of what the page knows (which methods a
recommendation ranked or excluded, which cells are the paper's gaps, the evidence rows measured here),
so tests can count its markers. A method with rows that Shrinkwise measured itself gets a line in its
hover ("Measured here: perplexity +18.7% (SmolLM2-135M-Instruct, gptq (bits=4, group_size=128))") and
a thin ring around its marker, so the user's own figures are visible beside the papers' grades.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go

from app.figures.palette import IMPACT_LABELS, PHASE_LABELS, PHASES, family_colour, phase_index
from knowledge.schema import Evidence, Method, Metric

#: Name (and legend entry) of the trace of rings drawn around methods with evidence measured here.
MEASURED_TRACE = "measured here"

#: Marks the traces that hold one marker per method, so tests and the page can tell them apart from
#: decoration (there is none today, but a later overlay must not break the count).
METHOD_TRACE = "methods"

# Geometry of a cell in data units: each cell is 1 x 1; a margin keeps markers off the borders and a
# band at the top of the cell is left for the cell's note (the paper's gap label).
_PAD_X = 0.08
_PAD_BOTTOM = 0.08
_TOP_BAND = 0.2
#: How many columns a cell's grid gets relative to its rows (columns ~ sqrt(n * aspect)). Names are
#: written under the markers, horizontally, so a cell uses few columns and more rows: a label then has
#: a column's full width (about 12 characters at 1280 px) and never runs into its neighbour.
_CELL_ASPECT = 0.35


@dataclass(frozen=True)
class GapCell:
    """A cell empty in the paper's set, with the methods of the knowledge base that fill it now."""

    phase: str
    impact: str
    fillers: tuple[str, ...]


#: The two ways to draw the grid: "wide" is the paper's Figure 1 (phases as columns); "tall" turns it
#: a quarter for a phone (phases as rows, top to bottom; static left, dynamic right), so that each
#: cell keeps enough width for the names.
WIDE, TALL = "wide", "tall"
#: Columns vs rows of a cell's grid in the tall layout (cells are narrower there: two columns).
_TALL_ASPECT = 0.2


def _row_of(impact: str) -> int:
    """Static above (row 1), dynamic below (row 0), as the paper draws it."""
    return 1 if str(impact) == "static" else 0


def cell_origin(phase: str, impact: str, orientation: str = WIDE) -> tuple[int, int]:
    """Lower-left corner of the cell (phase, impact) in data units (every cell is 1 x 1)."""
    if orientation == TALL:
        return (0 if str(impact) == "static" else 1, 3 - phase_index(phase))
    return (phase_index(phase), _row_of(impact))


def cell_positions(
    n: int, phase: str, impact: str, aspect: float | None = None, orientation: str = WIDE
) -> list[tuple[float, float]]:
    """Centres of ``n`` markers on a grid inside the cell (phase, impact), in reading order.

    Columns grow as sqrt(n * aspect); positions are the centres of the grid's cells, so two markers are
    always at least one grid step apart.
    """
    if n <= 0:
        return []
    if aspect is None:
        aspect = _TALL_ASPECT if orientation == TALL else _CELL_ASPECT
    cols = max(1, math.ceil(math.sqrt(n * aspect)))
    rows = math.ceil(n / cols)
    cx, cy = cell_origin(phase, impact, orientation)
    x0 = cx + _PAD_X
    width = 1 - 2 * _PAD_X
    y_top = cy + 1 - _TOP_BAND
    height = 1 - _TOP_BAND - _PAD_BOTTOM
    step_x, step_y = width / cols, height / rows
    out = []
    for k in range(n):
        r, c = divmod(k, cols)
        in_row = cols if r < rows - 1 else n - cols * (rows - 1)
        # Centre a short last row so a lone marker does not hang in the corner.
        offset = (cols - in_row) * step_x / 2
        out.append((x0 + offset + (c + 0.5) * step_x, y_top - (r + 0.5) * step_y))
    return out


def layout_methods(methods: Iterable[Method], orientation: str = WIDE) -> dict[str, tuple[float, float]]:
    """Position of every method: grouped by cell, ordered by family then name so families cluster."""
    by_cell: dict[tuple[str, str], list[Method]] = {}
    for m in methods:
        by_cell.setdefault((str(m.phase), str(m.impact)), []).append(m)
    pos: dict[str, tuple[float, float]] = {}
    for (phase, impact), ms in by_cell.items():
        ms.sort(key=lambda m: (str(m.family), m.name.lower()))
        for m, xy in zip(ms, cell_positions(len(ms), phase, impact, orientation=orientation)):
            pos[m.id] = xy
    return pos


def short_label(name: str, aliases: Sequence[str] = (), limit: int = 13) -> str:
    """A marker label of at most ``limit`` characters: the name before its parenthesis ("GPTQ"), else
    the parenthesis when it is the short form ("Round-to-nearest weight quantization (RTN)" -> "RTN"),
    else a short alias, else the name cut with an ellipsis. The hover shows the full name."""
    head, _, rest = name.partition(" (")
    paren = rest.split(")")[0] if rest else ""
    # An alias counts only when it looks like an acronym or a proper name (has a capital): "RTN", not "e4m3".
    named = [a for a in sorted(aliases, key=len) if len(a) >= 3 and any(ch.isupper() for ch in a)]
    for candidate in (head, paren, *named):
        if candidate and len(candidate) <= limit:
            return candidate
    return head[: limit - 1].rstrip() + "…"


_RUN_ID = re.compile(r"run #(\d+)")


def run_id_of(row: Evidence) -> int | None:
    """The id of the Shrinkwise run a measured row came from ("Shrinkwise run #12" -> 12), else None."""
    found = _RUN_ID.search(row.source.paper)
    return int(found.group(1)) if found and row.measured_here else None


def _headline(rows: Sequence[Evidence]) -> Evidence:
    """The measured row a hover shows: a quality row (perplexity, accuracy) with a baseline first, then
    any row with a baseline; among those the most recent run (highest run id; rows of the bundled data
    files, which have none, count as oldest), then the best (smallest quality drop), then the last given.
    The hover says how many rows there are, so the best one is not taken for the only one."""

    def rank(item: tuple[int, Evidence]) -> tuple[int, int, int, float, int]:
        i, e = item
        quality = e.metric in (Metric.PERPLEXITY, Metric.ACCURACY)
        change = e.relative_change
        goodness = 0.0 if change is None else (-change if e.metric.lower_is_better else change)
        return (e.baseline not in (None, 0), quality, run_id_of(e) or -1, goodness, i)

    return max(enumerate(rows), key=rank)[1]


def measured_line(rows: Sequence[Evidence]) -> str:
    """One hover line for a method's measured rows, e.g. "Measured here: perplexity +18.7%
    (SmolLM2-135M-Instruct, gptq (bits=4, group_size=128))", plus how many rows there are in all."""
    e = _headline(rows)
    change = e.relative_change
    figure = f"{e.metric} {change:+.1%}" if change is not None else f"{e.metric} {e.value:g}"
    run = run_id_of(e)
    more = f" · {len(rows)} measured rows" if len(rows) > 1 else ""
    return (
        f"<b>Measured here</b>: {figure} ({e.model}, {e.setting}"
        + (f", run #{run}" if run is not None else "")
        + f"){more}"
    )


def _hover(m: Method, measured: Sequence[Evidence] = ()) -> str:
    g = m.grades
    paper = "<br><i>One of the paper's eight methods</i>" if m.in_paper else ""
    here = f"<br>{_wrap(measured_line(measured), 70)}" if measured else ""
    return (
        f"<b>{m.name}</b> ({m.family})<br>"
        f"{PHASE_LABELS.get(str(m.phase), m.phase)} · {IMPACT_LABELS.get(str(m.impact), m.impact)}<br>"
        f"size reduction: {g.size_reduction} · quality drop: {g.quality_drop}<br>"
        f"hardware dependence: {g.hardware_dependence} · backward compatibility: {g.backward_compatibility}"
        f"{here}<br>{_wrap(m.summary)}{paper}"
    )


def _wrap(text: str, width: int = 60) -> str:
    """Break a summary into lines for the hover box (plotly does not wrap hover text)."""
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    if line:
        lines.append(line)
    return "<br>".join(lines)


def phase_impact_map(
    methods: Sequence[Method],
    *,
    highlighted: Iterable[str] = (),
    faded: Iterable[str] = (),
    gaps: Sequence[GapCell] = (),
    labels: bool = True,
    orientation: str = WIDE,
    height: int | None = None,
    evidence: Iterable[Evidence] = (),
) -> go.Figure:
    """Figure 1 of the paper with ``methods`` as markers, one per method.

    ``highlighted`` (e.g. the ranked methods of a recommendation) get a thick outline; ``faded``
    (e.g. the excluded ones) are drawn translucent. ``gaps`` are shaded with a note naming the methods
    that fill them. Each marker's ``customdata`` starts with the method id, for selection events.
    ``evidence`` may hold any rows; those measured here (``Evidence.measured_here``) add a hover line
    to their method and a ring around its marker (one legend entry, "measured here").
    """
    highlighted, faded = set(highlighted), set(faded)
    measured: dict[str, list[Evidence]] = {}
    for e in evidence:
        if e.measured_here:
            measured.setdefault(e.method, []).append(e)
    tall = orientation == TALL
    pos = layout_methods(methods, orientation)
    fig = go.Figure()

    # The grid: one rectangle per cell, gap cells tinted.
    gap_at = {(g.phase, g.impact): g for g in gaps}
    for phase in PHASES:
        for impact in ("static", "dynamic"):
            x0, y0 = cell_origin(phase, impact, orientation)
            gap = gap_at.get((phase, impact))
            fig.add_shape(
                type="rect",
                x0=x0 + 0.01,
                x1=x0 + 0.99,
                y0=y0 + 0.01,
                y1=y0 + 0.99,
                layer="below",
                line=dict(
                    color="#d98c00" if gap else "rgba(128,128,128,0.45)",
                    width=2 if gap else 1,
                    dash="dash" if gap else "solid",
                ),
                fillcolor="rgba(255,190,60,0.14)" if gap else "rgba(128,128,128,0.04)",
            )
            if gap:
                filled = ", ".join(gap.fillers[:6]) + (" …" if len(gap.fillers) > 6 else "")
                fig.add_annotation(
                    x=x0 + 0.5,
                    y=y0 + 0.985,
                    yanchor="top",
                    showarrow=False,
                    text="<b>paper's gap</b>" + (f" · {len(gap.fillers)} now" if gap.fillers else ""),
                    hovertext=("Filled now by: " + filled) if gap.fillers else "No method fills it yet",
                    font=dict(size=11, color="#a86400"),
                )

    # One trace per family so the legend explains the colours. The legend entry is a separate, empty
    # circle trace: plotly draws a legend symbol from a trace's first point, which may be a diamond.
    families: dict[str, list[Method]] = {}
    for m in methods:
        families.setdefault(str(m.family), []).append(m)
    # Rings under the markers of methods measured here; drawn first so the marker stays clickable.
    ringed = [m for m in methods if m.id in measured]
    if ringed:
        fig.add_trace(
            go.Scatter(
                x=[pos[m.id][0] for m in ringed],
                y=[pos[m.id][1] for m in ringed],
                mode="markers",
                name=MEASURED_TRACE,
                legendgroup=MEASURED_TRACE,
                legendrank=2000,
                hoverinfo="skip",
                marker=dict(
                    symbol="circle-open",
                    size=[
                        (25 if tall else 29) if m.id in highlighted else (20 if tall else 23) for m in ringed
                    ],
                    color="#6a3d9a",
                    line=dict(width=1.5),
                ),
            )
        )
    for family in sorted(families):
        ms = families[family]
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name=family,
                legendgroup=family,
                marker=dict(color=family_colour(family), size=11, symbol="circle"),
                hoverinfo="skip",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[pos[m.id][0] for m in ms],
                y=[pos[m.id][1] for m in ms],
                mode="markers+text" if labels else "markers",
                name=family,
                legendgroup=family,
                showlegend=False,
                meta=METHOD_TRACE,
                text=[short_label(m.name, m.aliases) for m in ms] if labels else None,
                textposition="bottom center",
                textfont=dict(size=9 if tall else 10),
                cliponaxis=False,
                customdata=[[m.id, _hover(m, measured.get(m.id, ()))] for m in ms],
                hovertemplate="%{customdata[1]}<extra></extra>",
                marker=dict(
                    color=family_colour(family),
                    size=[(15 if tall else 17) if m.id in highlighted else (10 if tall else 13) for m in ms],
                    symbol=["diamond" if m.in_paper else "circle" for m in ms],
                    opacity=[0.22 if m.id in faded else 0.95 for m in ms],
                    line=dict(
                        color=["#111111" if m.id in highlighted else "rgba(255,255,255,0.9)" for m in ms],
                        width=[3 if m.id in highlighted else 1 for m in ms],
                    ),
                ),
            )
        )

    phase_ticks = [PHASE_LABELS[p] for p in PHASES]
    impact_ticks = ["<b>Dynamic</b><br>per input,<br>weights kept", "<b>Static</b><br>weights<br>changed"]
    if tall:
        xaxis = dict(
            range=[0, 2],
            tickvals=[0.5, 1.5],
            side="top",
            ticktext=["<b>Static</b>: weights changed", "<b>Dynamic</b>: per input"],
        )
        yaxis = dict(
            range=[0, 4],
            tickvals=[3.5, 2.5, 1.5, 0.5],
            ticktext=[t.replace("-", "-<br>") for t in phase_ticks],
            title=dict(text="↓ later phase: more adaptive, less predictable", font=dict(size=11)),
        )
    else:
        xaxis = dict(
            range=[0, 4],
            tickvals=[i + 0.5 for i in range(4)],
            ticktext=phase_ticks,
            side="bottom",
            title=dict(
                text="phase of application → closer to inference: more adaptive, less predictable",
                font=dict(size=12),
            ),
        )
        yaxis = dict(range=[0, 2], tickvals=[0.5, 1.5], ticktext=impact_ticks)
    for axis in (xaxis, yaxis):
        axis.update(fixedrange=True, showgrid=False, zeroline=False)
    fig.update_layout(
        height=height or (1500 if tall else 720),
        margin=dict(l=10, r=10, t=30, b=10),
        clickmode="event+select",
        dragmode=False,
        hoverlabel=dict(align="left"),
        legend=dict(
            orientation="h",
            yanchor="bottom",
            y=1.0 if not tall else 1.02,
            xanchor="left",
            x=0,
            title_text="family: ",
        ),
        xaxis=xaxis,
        yaxis=yaxis,
    )
    return fig


def marker_ids(fig: go.Figure) -> list[str]:
    """Ids of the methods drawn as markers, in trace order: what a test counts and a click resolves."""
    return [row[0] for t in fig.data if t.meta == METHOD_TRACE for row in (t.customdata or ())]


def selected_ids(fig: go.Figure, selection: Mapping | None) -> list[str]:
    """Method ids behind a ``st.plotly_chart(on_select=...)`` selection, in the order they were picked."""
    if not selection:
        return []
    points = selection.get("points") or selection.get("selection", {}).get("points") or []
    out = []
    for p in points:
        cd = p.get("customdata")
        if cd:
            out.append(cd[0] if isinstance(cd, (list, tuple)) else cd)
            continue
        curve, idx = p.get("curve_number"), p.get("point_index", p.get("point_number"))
        if curve is not None and idx is not None and curve < len(fig.data):
            trace = fig.data[curve]
            if trace.meta == METHOD_TRACE and trace.customdata is not None and idx < len(trace.customdata):
                out.append(trace.customdata[idx][0])
    return out
