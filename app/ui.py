"""Small Streamlit building blocks the pages share: badges for a method's cell, the gap cells from the
engine's report, the recommendation kept in session state. Layout only; no decisions are made here."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app import state
from app.figures.palette import IMPACT_LABELS, PHASE_LABELS
from app.figures.phase_map import GapCell

PHASE_COLOURS = {
    "pre-training": "violet",
    "post-training": "blue",
    "fine-tuning": "orange",
    "inference": "green",
}


def badges(method: Any) -> None:
    """Phase, impact and family as coloured badges in one row (plus the paper's mark)."""
    parts = [
        f":{PHASE_COLOURS.get(str(method.phase), 'gray')}-badge[{PHASE_LABELS.get(str(method.phase), method.phase)}]",
        f":{'red' if str(method.impact) == 'static' else 'green'}-badge["
        f"{IMPACT_LABELS.get(str(method.impact), method.impact)}]",
        f":gray-badge[{method.family}]",
    ]
    if method.in_paper:
        parts.append(":primary-badge[in the paper]")
    if getattr(method, "fills_gap", False):
        parts.append(":orange-badge[fills the paper's gap]")
    st.markdown(" ".join(parts))


def gap_cells() -> list[GapCell]:
    """The paper's gap cells from the engine's gap report, as the map figure wants them."""
    report = state.gap_report()
    out = []
    for cell in report.cells:
        if getattr(cell, "is_paper_gap", False):
            fillers = tuple(state.method_name(str(f)) for f in cell.fillers)
            out.append(GapCell(str(cell.phase), str(cell.impact), fillers))
    return out


def last_recommendation() -> Any | None:
    return st.session_state.get(state.RECOMMENDATION)
