"""Recommend: the questionnaire, and the explained recommendation it produces.

The form's values are the engine's ``Constraints``; they are written to the URL's query parameters on
submit, and a URL that carries them fills the form and shows the result at once, so a recommendation
can be shared as a link.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import streamlit as st

from app import report, state, ui
from app.figures.lifecycle import PipelineView, Step, pipeline_figure
from app.figures.tradeoff import Candidate, adaptivity_figure, memory_quality_figure
from engine.constraints import FIELDS, Constraints, ConstraintsError

PHASES = ["pre-training", "post-training", "fine-tuning", "inference"]
SIZES = ["135M", "1B", "3B", "7B", "8B", "13B", "34B", "70B"]
PRIORITY_LABELS = {"predictability": "Predictability", "balanced": "Balanced", "adaptivity": "Adaptivity"}
HARDWARE_LABELS = {
    "cpu": "CPU",
    "nvidia-gpu": "NVIDIA GPU",
    "amd-gpu": "AMD GPU",
    "apple-silicon": "Apple silicon",
    "mobile": "Mobile / edge",
}
WORKLOADS = {
    "chat": "Chat (short prompts, interactive)",
    "long-context": "Long context (documents, RAG)",
    "batch": "Batch (throughput, offline)",
    "multimodal": "Multimodal (images + text)",
}
ENGINES = ["any", "vllm", "llama.cpp", "transformers", "tensorrt-llm", "onnxruntime", "openvino"]
TOP_CARDS = 6


def size_label(params: float) -> str:
    """7e9 -> '7B', 1.5e9 -> '1.5B', 135e6 -> '135M' (the way sizes are usually written)."""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if params >= scale:
            return f"{params / scale:.4g}{unit}"
    return f"{params:g}"


def widgets_from(c: Constraints) -> None:
    """Fill the form's widgets from constraints (a shared link, or the defaults)."""
    s = st.session_state
    s["rec_phases"] = [p.value for p in c.phases]
    s["rec_keep"] = c.keep_original
    s["rec_priority"] = c.priority.value
    s["rec_hardware"] = c.hardware.value
    s["rec_size"] = size_label(c.model_params)
    s["rec_memory"] = c.memory_gb
    s["rec_drop"] = float(c.max_quality_drop)
    s["rec_calib"] = c.calibration_data
    s["rec_training"] = c.training_budget.value
    s["rec_workload"] = c.workload.value
    s["rec_engine"] = c.serving_engine.value if c.serving_engine else "any"


def constraints_from_widgets() -> Constraints:
    s = st.session_state
    return Constraints.from_dict(
        {
            "phases": list(s["rec_phases"] or []),
            "keep_original": s["rec_keep"],
            "priority": s["rec_priority"] or "balanced",
            "hardware": s["rec_hardware"],
            "model_params": s["rec_size"],
            "memory_gb": s["rec_memory"],
            "max_quality_drop": s["rec_drop"],
            "calibration_data": s["rec_calib"],
            "training_budget": s["rec_training"] or "none",
            "workload": s["rec_workload"],
            "serving_engine": None if s["rec_engine"] in (None, "any") else s["rec_engine"],
        }
    )


def _query_key(query: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in query.items()))


def show(c: Constraints) -> None:
    """Compute the recommendation for ``c`` and keep it for the other pages (the map's overlay)."""
    st.session_state[state.CONSTRAINTS] = c
    st.session_state[state.RECOMMENDATION] = state.recommend(c)


# --- the questionnaire ----------------------------------------------------------------------------

st.title("How should I compress my model?")
st.markdown(
    "Describe your situation; Shrinkwise ranks every compression method it knows and says **why**, "
    "using the rules of Bayazitov (2026): *static* methods (the model is rewritten once) give a "
    "predictable saving but need you to change the model; *dynamic* methods (computation adapts per "
    "request at inference) keep the original weights but their gain depends on hardware and input. "
    "The **Map** shows the whole field; the **About** page explains the rules."
)

query = {k: st.query_params.get(k) for k in st.query_params if k in FIELDS}
if "rec_phases" not in st.session_state:
    # First visit, or back from another page (Streamlit drops a page's widget state when it is left):
    # refill the form from the last recommendation's constraints and put them back in the URL.
    last = st.session_state.get(state.CONSTRAINTS)
    widgets_from(last or Constraints())
    if last is not None and not query:
        st.query_params.from_dict(last.to_query())
        query = last.to_query()
        st.session_state["rec_applied_query"] = _query_key(query)
if query and st.session_state.get("rec_applied_query") != _query_key(query):
    st.session_state["rec_applied_query"] = _query_key(query)
    try:
        shared = Constraints.from_query(query, strict=False)
    except ConstraintsError as exc:
        st.error(f"The link's constraints are not valid: {exc}")
    else:
        widgets_from(shared)
        show(shared)

size_options = SIZES if st.session_state["rec_size"] in SIZES else SIZES + [st.session_state["rec_size"]]

with st.form("rec_form", border=True):
    st.pills(
        "Phases you can intervene in",
        PHASES,
        selection_mode="multi",
        key="rec_phases",
        help="Pre-training: you train the model yourself. Post-training: you have the finished weights. "
        "Fine-tuning: you can train it further. Inference: you control how it is served.",
    )
    a, b, c3 = st.columns(3, gap="medium")
    with a:
        st.toggle(
            "Keep the original weights usable",
            key="rec_keep",
            help="On if the original model must stay available unchanged (then only dynamic methods "
            "apply, or you store two copies).",
        )
        st.segmented_control(
            "What matters more",
            list(PRIORITY_LABELS),
            key="rec_priority",
            format_func=PRIORITY_LABELS.get,
            help="Predictability: a fixed, guaranteed saving (static). Adaptivity: savings "
            "that follow each request (dynamic). The paper's central trade-off.",
        )
        st.segmented_control(
            "Training budget",
            ["none", "low", "high"],
            key="rec_training",
            help="Compute for (re)training: none = one-shot methods only; low = LoRA-scale "
            "fine-tuning; high = full fine-tuning or pre-training runs.",
        )
    with b:
        st.selectbox(
            "Model size (parameters)",
            size_options,
            key="rec_size",
            accept_new_options=True,
            help="Pick a common size or type your own, e.g. 1.5B, 405B or 7e9.",
        )
        st.number_input(
            "Memory budget for the weights (GB)",
            value=None,
            min_value=0.1,
            max_value=10000.0,
            step=0.5,
            key="rec_memory",
            placeholder="no budget",
            help="How much memory the compressed weights may take on the target. Empty = no limit.",
        )
        st.number_input(
            "Acceptable quality drop (%)",
            min_value=0.0,
            max_value=100.0,
            step=0.5,
            key="rec_drop",
            help="Relative rise in perplexity or loss in task accuracy you accept.",
        )
    with c3:
        st.selectbox(
            "Hardware",
            list(HARDWARE_LABELS),
            key="rec_hardware",
            format_func=HARDWARE_LABELS.get,
            help="Where the compressed model will run; many gains need specific kernels.",
        )
        st.selectbox(
            "Workload",
            list(WORKLOADS),
            key="rec_workload",
            format_func=WORKLOADS.get,
            help="What the model mostly serves; token and KV-cache methods pay off on long inputs.",
        )
        st.selectbox(
            "Serving engine",
            ENGINES,
            key="rec_engine",
            format_func=lambda e: "any / not decided" if e == "any" else e,
            help="The engine that must load the result; methods whose format it cannot load are excluded.",
        )
        st.toggle(
            "I have calibration data",
            key="rec_calib",
            help="A few hundred samples of representative text (no labels). GPTQ, AWQ, SpQR need it.",
        )
    submitted = st.form_submit_button("Recommend", type="primary", width="stretch")

if submitted:
    try:
        chosen = constraints_from_widgets()
    except ConstraintsError as exc:
        st.error(f"Please fix the form: {exc}")
    else:
        new_query = chosen.to_query()
        st.query_params.from_dict(new_query)
        st.session_state["rec_applied_query"] = _query_key(new_query)
        show(chosen)

rec = ui.last_recommendation()
cons = st.session_state.get(state.CONSTRAINTS)
if rec is None or cons is None:
    st.info(
        "Fill in the form and press **Recommend**. The defaults describe a 7B chat model on an NVIDIA "
        "GPU with calibration text and no training budget."
    )
    st.stop()

# --- the result -----------------------------------------------------------------------------------

doc = rec.to_dict()
cat = state.catalog()
ranked, excluded, pipelines = doc.get("ranked", []), doc.get("excluded", []), doc.get("pipelines", [])
original_gb = cons.model_params * 2 / 1e9  # fp16/bf16 weights, 2 bytes each

st.header("Recommendation")
st.markdown(
    f"For a **{size_label(cons.model_params)}** model (about **{original_gb:.1f} GB** of 16-bit weights) "
    f"on **{HARDWARE_LABELS[cons.hardware.value]}**: **{len(ranked)}** methods ranked, **{len(excluded)}** "
    "excluded. Each score is the sum of the rules below it; the estimates use the evidence rows of the "
    "cited papers (or, where there are none, the paper's grade)."
)
if not ranked:
    st.warning(
        "No method passes these constraints. Open *Excluded methods* below to see what ruled each out."
    )


def card(rank: int, r: dict) -> None:
    """One ranked method: what it is, its numbers (first, so a phone shows them before the reasons),
    where the quality estimate comes from, then every rule that moved its score."""
    m = cat.methods.get(r["id"])
    est = r.get("estimate") or {}
    with st.container(border=True):
        st.markdown(f"#### {rank}. {m.name if m else r['id']}")
        if m:
            ui.badges(m)
            st.caption(m.summary)
        m1, m2, m3, m4 = st.columns([1, 1.3, 1.3, 1.4], vertical_alignment="top")
        m1.metric("Score", f"{float(r.get('score', 0)):.2f}", help="Sum of the rule weights below")
        mem = est.get("memory_gb")
        fits = est.get("fits")
        budget = f" of {cons.memory_gb:g} GB" if cons.memory_gb else ""
        if fits is not None:
            delta, colour = ("fits" + budget, "normal") if fits else ("over budget" + budget, "inverse")
        elif mem is not None:  # no budget: show the saving against the 16-bit original
            delta, colour = f"{(mem / original_gb - 1) * 100:+.0f}% vs 16-bit", "inverse"
        else:
            delta, colour = None, "off"
        m2.metric(
            "Weights after",
            f"{mem:.1f} GB" if mem is not None else "n/a",
            delta=delta,
            delta_color=colour,
            help=f"{est.get('bits_per_weight', 'n/a')} bits per weight; "
            f"{float(est.get('param_fraction', 1)):.0%} of parameters kept",
        )
        drop = est.get("quality_drop_pct")
        m3.metric(
            "Expected quality drop",
            f"~{drop:.1f}%" if drop is not None else "n/a",
            help="Relative perplexity rise or accuracy loss",
        )
        if m4.button("Open method page", key=f"rec_open_{r['id']}", width="stretch"):
            state.open_method(r["id"])
        sources = [
            ("**measured here** on " if ev.get("measured_here") else "")
            + f"{ev.get('model')}: {ev.get('metric')} {ev.get('value')} vs {ev.get('baseline')} "
            f"({ev.get('source')})"
            for ev in (est.get("evidence") or [])[:3]
        ]
        measured_on = est.get("quality_measured_on") or []
        if measured_on:  # the user's own runs feed this estimate: say so, and on which model
            st.markdown(f":violet-badge[:material/science: measured here on {', '.join(measured_on)}]")
        st.caption(
            "Quality estimate: "
            + (est.get("quality_note") or "n/a")
            + ("  \n" + "  \n".join(sources) if sources else "")
        )
        lines = []
        for reason in r.get("reasons", []):
            w = reason.get("weight")
            num = isinstance(w, (int, float))
            mark = ":green[▲]" if num and w > 0 else (":red[▼]" if num and w < 0 else ":gray[•]")
            wtxt = f" `{w:+.2f}`" if num and w else ""
            src = f" :gray[({reason['source']})]" if reason.get("source") else ""
            lines.append(f"{mark} {reason.get('text', reason.get('rule_id'))}{wtxt}{src}")
        st.markdown("**Why**  \n" + "  \n".join(lines))


for i, r in enumerate(ranked[:TOP_CARDS], 1):
    card(i, r)
if len(ranked) > TOP_CARDS:
    with st.expander(f"{len(ranked) - TOP_CARDS} more ranked methods"):
        rows = []
        for i, r in enumerate(ranked[TOP_CARDS:], TOP_CARDS + 1):
            est = r.get("estimate") or {}
            rows.append(
                f"{i}. **{state.method_name(r['id'])}**: score {float(r.get('score', 0)):.2f}, "
                f"{est.get('memory_gb', 0):.1f} GB, ~{est.get('quality_drop_pct', 0):.1f}% drop"
            )
        st.markdown("\n".join(rows))  # one element, not one per method: the page stays light

with st.expander(f"Excluded methods ({len(excluded)}): why each one is ruled out"):
    lines = []
    for e in excluded:
        why = "; ".join(
            str(x.get("text") or x.get("rule_id")) if isinstance(x, dict) else str(x)
            for x in e.get("reasons", [])
        )
        lines.append(f"- **{state.method_name(e['id'])}**: {why}")
    st.markdown("\n".join(lines))

if pipelines:
    st.subheader("Best pipelines across the lifecycle")
    st.caption(
        "Compatible methods stacked in lifecycle order (■ static, ● dynamic). The estimate is for the "
        "whole stack."
    )
    views = []
    for i, p in enumerate(pipelines, 1):
        est = p.get("estimate") or {}
        steps = tuple(
            Step(
                mid,
                state.method_name(mid),
                str(cat.methods[mid].phase),
                str(cat.methods[mid].family),
                str(cat.methods[mid].impact),
            )
            for mid in report.pipeline_ids(p)
            if mid in cat.methods
        )
        mem, drop = est.get("memory_gb"), est.get("quality_drop_pct")
        label = (
            f"#{i}"
            + (f" · {mem:.1f} GB" if mem is not None else "")
            + (f" · ~{drop:.1f}%" if drop is not None else "")
        )
        views.append(PipelineView(label=label, steps=steps))
    st.plotly_chart(pipeline_figure(views), key="rec_pipelines", config={"displayModeBar": False})
    for view in views:
        st.markdown(f"**{view.label}**: " + " → ".join(f"{s.name} ({s.phase})" for s in view.steps))

st.subheader("The trade-off")
from engine import axes  # noqa: E402  (the engine's positions: the chart and the rules agree)

cands = []
for i, r in enumerate(ranked[:15], 1):
    m = cat.methods.get(r["id"])
    if m is None:
        continue
    est = r.get("estimate") or {}
    cands.append(
        Candidate(
            m.id,
            m.name,
            str(m.family),
            str(m.impact),
            float(r.get("score", 0)),
            est.get("memory_gb"),
            est.get("quality_drop_pct"),
            axes.position(m).adaptivity,
            i,
        )
    )
t1, t2 = st.tabs(["Memory vs quality drop", "Predictability vs adaptivity"])
with t1:
    st.caption(
        "The top candidates by estimated memory and expected quality drop; the label is the rank. "
        "Below the orange line (and left of the red budget line, if you set one) fits your limits; "
        f"the grey dotted line is the 16-bit original ({original_gb:.1f} GB)."
    )
    st.plotly_chart(
        memory_quality_figure(cands, cons.memory_gb, cons.max_quality_drop, original_gb),
        key="rec_tradeoff_mem",
        config={"displayModeBar": False},
    )
with t2:
    st.caption(
        "Where each candidate sits on the paper's central trade-off: static, early methods give a "
        "predictable saving (left); dynamic methods near inference adapt to each request (right)."
    )
    st.plotly_chart(adaptivity_figure(cands), key="rec_tradeoff_axes", config={"displayModeBar": False})

st.subheader("Share and download")
st.caption("The page's address now holds these constraints: copy it to share this recommendation.")
st.page_link(state.PAGE_MAP, label="See the ranked methods highlighted on the map", icon=":material/map:")
base = (st.context.url or "").split("?")[0]
share = f"{base}?{urlencode(cons.to_query())}" if base else None
if share:
    st.code(share, language=None)
d1, d2 = st.columns(2)
d1.download_button(
    "Report (Markdown)",
    report.to_markdown(doc, state.method_name, link=share),
    file_name="shrinkwise-report.md",
    mime="text/markdown",
    key="rec_dl_md",
    width="stretch",
    on_click="ignore",
)
d2.download_button(
    "Report (JSON)",
    json.dumps(doc, indent=2, default=str),
    file_name="shrinkwise-report.json",
    mime="application/json",
    key="rec_dl_json",
    width="stretch",
    on_click="ignore",
)
