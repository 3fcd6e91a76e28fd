"""Map: the paper's Figure 1 (phase of application x nature of impact), interactive."""

from __future__ import annotations

import streamlit as st

from app import state, ui
from app.figures.palette import PHASE_LABELS
from app.figures.phase_map import phase_impact_map, selected_ids

st.title("The phase × impact map")
st.markdown(
    "Every compression method answers two questions. **When** is it applied in the model's life "
    "(columns, left to right: pre-training → post-training → fine-tuning → inference)? And does it "
    "change the model **for good** (*static*, upper row: the weights or the structure are rewritten, "
    "the gain is predictable, the original is gone) or only **while answering** (*dynamic*, lower row: "
    "computation adapts to each input, the original weights stay usable, the gain depends on the "
    "hardware and the request)? This grid is Figure 1 of Bayazitov (2026); the closer to inference, "
    "the more adaptive and the less predictable the gain. On a phone, choose the *Tall* layout."
)

cat = state.catalog()
methods = sorted(cat.methods.values(), key=lambda m: m.name.lower())
rec = ui.last_recommendation()

c1, c2, c3 = st.columns([1.2, 1.4, 1.4])
scope = c1.segmented_control(
    "Show",
    ["The paper's eight", "Whole knowledge base"],
    default="Whole knowledge base",
    key="map_scope",
    help="The paper's Table 1 reviews eight methods; the knowledge base holds many more.",
)
families = sorted({str(m.family) for m in methods})
family = c2.multiselect(
    "Family",
    families,
    key="map_family",
    placeholder="all families",
    help="Quantization, pruning, distillation, ... (the marker colour).",
)
targets = sorted({str(h.target) for m in methods for h in m.hardware})
hardware = c3.multiselect(
    "Hardware target",
    targets,
    key="map_hardware",
    placeholder="any hardware",
    help="Keep methods that give a real gain on this hardware.",
)
c4, c5, c6 = st.columns([1.2, 1.4, 1.4])
# Phones get the tall layout first (the browser says so in its User-Agent); anyone can switch.
agent = (st.context.headers or {}).get("User-Agent", "") if st.context.headers is not None else ""
layout = c4.segmented_control(
    "Layout",
    ["Wide", "Tall"],
    default="Tall" if "Mobi" in agent else "Wide",
    key="map_layout",
    help="Wide is the paper's figure (phases left to right). Tall turns it for a phone: phases top to "
    "bottom, static left, dynamic right.",
)
labels = c5.toggle("Show names", value=True, key="map_labels", help="Names under the markers.")
fits = c6.toggle(
    "Only what fits my constraints",
    value=False,
    key="map_fits",
    disabled=rec is None,
    help="Hide the methods your last recommendation excluded."
    if rec is not None
    else "Get a recommendation on the Recommend page first.",
)

shown = methods
if scope == "The paper's eight":
    shown = [m for m in shown if m.in_paper]
if family:
    shown = [m for m in shown if str(m.family) in family]
if hardware:
    shown = [m for m in shown if any(str(h.target) in hardware for h in m.hardware)]
# the recommender ranks recipes; the map is per method: a method is outlined when one of its recipes
# ranks, faded when all of them are excluded
ranked_ids = list(rec.ranked_method_ids) if rec is not None else []
excluded_ids = list(rec.excluded_method_ids) if rec is not None else []
if fits and rec is not None:
    shown = [m for m in shown if m.id in set(ranked_ids)]

if rec is not None:
    st.caption(
        f"Your last recommendation ranked **{len(ranked_ids)}** methods and excluded "
        f"**{len(excluded_ids)}**: the top five are outlined, the excluded ones faded."
    )
    st.page_link(state.PAGE_RECOMMEND, label="Back to the recommendation", icon=":material/explore:")
gaps = ui.gap_cells()
fig = phase_impact_map(
    shown,
    highlighted=ranked_ids[:5],
    faded=excluded_ids,
    gaps=gaps,
    labels=labels,
    orientation="tall" if layout == "Tall" else "wide",
    evidence=cat.evidence,
)
n_measured = len({e.method for e in cat.evidence if e.measured_here} & {m.id for m in shown})
st.caption(
    f"**{len(shown)}** methods shown. ◆ diamonds are the paper's eight, ● circles the rest of the "
    "knowledge base; colour is the family. Hover a marker for its grades, click it to open its page."
    + (
        f" A thin ring marks the **{n_measured}** measured here by Shrinkwise itself; their hover shows "
        "the measured figure next to the papers' grades."
        if n_measured
        else ""
    )
)
event = st.plotly_chart(
    fig, on_select="rerun", selection_mode="points", key="map_chart", config={"displayModeBar": False}
)
picked = selected_ids(fig, getattr(event, "selection", None) if event is not None else None)
if picked:
    state.open_method(picked[0])

with st.container(border=True):
    st.markdown("**The paper's gaps.** Cells where none of the paper's eight methods sits (dashed, tinted):")
    for g in gaps:
        where = f"{PHASE_LABELS.get(g.phase, g.phase)} · {g.impact}"
        if g.fillers:
            st.markdown(f"- **{where}**: now filled by {', '.join(g.fillers)}.")
        else:
            st.markdown(f"- **{where}**: no method in the knowledge base yet.")
    st.caption(
        "The paper notes that no reviewed dynamic method acts at pre- or post-training, and points to "
        "architectures trained with a *potential* for dynamic compression that is activated at inference "
        "(mixture of experts, early exit, contextual sparsity)."
    )

pick = st.selectbox(
    "Or open a method",
    [m.id for m in shown],
    index=None,
    key="map_pick",
    format_func=state.method_name,
    placeholder="choose a method…",
)
if pick:
    state.open_method(pick)
