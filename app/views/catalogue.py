"""Catalogue: every method of the knowledge base in one searchable, sortable, filterable table."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state

st.title("Catalogue of methods")
st.markdown(
    "All compression methods Shrinkwise knows, with the paper's four grades. **Phase** is when the "
    "method is applied; **impact** says whether it rewrites the model for good (*static*) or adapts "
    "computation per input and keeps the weights (*dynamic*). Click a column header to sort, type to "
    "search, and select a row to open the method's page."
)

cat = state.catalog()


def _row(m) -> dict:
    g, r = m.grades, m.requirements
    return {
        "name": m.name,
        "id": m.id,
        "family": str(m.family),
        "phase": str(m.phase),
        "impact": str(m.impact),
        "size reduction": str(g.size_reduction),
        "quality drop": str(g.quality_drop),
        "hardware dep.": str(g.hardware_dependence),
        "backward compat.": str(g.backward_compatibility),
        "bits/weight": m.footprint.bits_per_weight if m.footprint.bits_per_weight < 16 else None,
        "hardware": ", ".join(str(h.target) for h in m.hardware),
        "calibration": r.calibration_data,
        "gradients": r.gradients,
        "training": str(r.training_compute),
        "paper's 8": m.in_paper,
        "year": m.citation.year,
        "compressor": m.compressor or "",
        "summary": m.summary,
    }


table = pd.DataFrame([_row(m) for m in sorted(cat.methods.values(), key=lambda m: m.name.lower())])

c1, c2, c3, c4 = st.columns([2, 1.2, 1.2, 1.4])
query = c1.text_input(
    "Search",
    key="cat_query",
    placeholder="name, id, family or words of the summary",
    help="Case-insensitive; matches the name, id, aliases, family and summary.",
)
phases = c2.multiselect(
    "Phase",
    ["pre-training", "post-training", "fine-tuning", "inference"],
    key="cat_phase",
    placeholder="all phases",
)
impacts = c3.multiselect("Impact", ["static", "dynamic"], key="cat_impact", placeholder="both")
families = c4.multiselect(
    "Family", sorted(table["family"].unique()), key="cat_family", placeholder="all families"
)
paper_only = st.toggle("Only the paper's eight", key="cat_paper", help="The methods of the paper's Table 1.")

view = table
if query:
    q = query.lower()
    aliases = {m.id: " ".join(m.aliases).lower() for m in cat.methods.values()}
    hay = (view["name"] + " " + view["id"] + " " + view["family"] + " " + view["summary"]).str.lower()
    hay = hay + " " + view["id"].map(aliases).fillna("")
    view = view[hay.str.contains(q, regex=False)]
if phases:
    view = view[view["phase"].isin(phases)]
if impacts:
    view = view[view["impact"].isin(impacts)]
if families:
    view = view[view["family"].isin(families)]
if paper_only:
    view = view[view["paper's 8"]]

st.caption(f"{len(view)} of {len(table)} methods")
event = st.dataframe(
    view.reset_index(drop=True),
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    key="cat_table",
    column_config={
        "summary": st.column_config.TextColumn(width="large"),
        "bits/weight": st.column_config.NumberColumn(
            format="%.2f", help="Stored bits per weight, scales included"
        ),
        "paper's 8": st.column_config.CheckboxColumn(help="One of the eight methods of the paper's Table 1"),
        "calibration": st.column_config.CheckboxColumn(help="Needs a sample of unlabelled text"),
        "gradients": st.column_config.CheckboxColumn(help="Needs backward passes (training memory)"),
        "year": st.column_config.NumberColumn(format="%d"),
    },
)
rows = event.selection.rows if event is not None and hasattr(event, "selection") else []
if rows:
    state.open_method(view.reset_index(drop=True).iloc[rows[0]]["id"])

pick = st.selectbox(
    "Open a method's page",
    list(view["id"]),
    index=None,
    key="cat_pick",
    format_func=state.method_name,
    placeholder="choose a method…",
)
if pick:
    state.open_method(pick)
