"""Recommend: the questionnaire, and the explained recommendation it produces.

The form's values are the engine's ``Constraints``; they are written to the URL's query parameters on
submit, and a URL that carries them fills the form and shows the result at once, so a recommendation
can be shared as a link.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import streamlit as st

from app import measured, report, state, ui
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
NONE = "none"


@st.cache_resource(show_spinner=False)
def _choices() -> tuple[dict[str, str], dict[str, str]]:
    """Bundled model shapes and devices, id -> label, for the form."""
    from knowledge.devices import bundled_devices
    from knowledge.shapes import bundled_models

    models = {m.id: f"{m.name} ({m.params / 1e9:.3g}B)" for m in bundled_models().values()}
    devices = {d.id: f"{d.name} ({d.memory_gb:g} GB)" for d in bundled_devices().values()}
    return models, devices


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
    s["rec_model"] = c.model or NONE
    s["rec_device"] = c.device or NONE
    s["rec_context"] = int(c.context_length)
    s["rec_batch"] = int(c.batch_size)


def constraints_from_widgets() -> Constraints:
    s = st.session_state
    model = s.get("rec_model") or NONE
    device = s.get("rec_device") or NONE
    return Constraints.from_dict(
        {
            "model": None if model == NONE else model,
            "device": None if device == NONE else device,
            "context_length": s.get("rec_context") or 4096,
            "batch_size": s.get("rec_batch") or 1,
            "phases": list(s["rec_phases"] or []),
            "keep_original": s["rec_keep"],
            "priority": s["rec_priority"] or "balanced",
            "hardware": None if device != NONE else s["rec_hardware"],
            "model_params": None if model != NONE else s["rec_size"],
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
    "Describe your deployment; Shrinkwise ranks **recipes** (a method with a concrete configuration, "
    "format, engine and the commands that produce and serve it) and says **why**, "
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
model_labels, device_labels = _choices()
model_options = [NONE, *model_labels]
if st.session_state.get("rec_model") not in model_options:
    model_options.append(st.session_state["rec_model"])  # a hub id or config.json path from a link
device_options = [NONE, *device_labels]

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
            "Model",
            model_options,
            key="rec_model",
            accept_new_options=True,
            format_func=lambda m: "by size only (below)" if m == NONE else model_labels.get(m, m),
            help="A bundled model (its layers, heads and vocabulary give the real memory, KV cache included), "
            "or type a hub id or a path to a config.json. 'By size only' uses the parameter count.",
        )
        st.selectbox(
            "Model size (parameters)",
            size_options,
            key="rec_size",
            accept_new_options=True,
            help="Pick a common size or type your own, e.g. 1.5B, 405B or 7e9.",
        )
        st.number_input(
            "Memory budget: weights + KV cache (GB)",
            value=None,
            min_value=0.1,
            max_value=10000.0,
            step=0.5,
            key="rec_memory",
            placeholder="no budget",
            help="How much memory the weights and the KV cache may take on the target. Empty = the "
            "device's memory when a device is chosen, else no limit.",
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
            "Device",
            device_options,
            key="rec_device",
            format_func=lambda d: (
                "any (choose the hardware kind below)" if d == NONE else device_labels.get(d, d)
            ),
            help="The accelerator or CPU: its generation decides FP8, Marlin, AMX, Metal... When set, it "
            "decides the hardware kind.",
        )
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
        n1, n2 = st.columns(2)
        n1.number_input(
            "Context (tokens)",
            min_value=1,
            max_value=10_000_000,
            step=1024,
            key="rec_context",
            help="Tokens per sequence: the KV cache grows with it.",
        )
        n2.number_input(
            "Batch (sequences)",
            min_value=1,
            max_value=100_000,
            step=1,
            key="rec_batch",
            help="Sequences served at once: the KV cache grows with it.",
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
measured.add_measured_on_model(
    doc, cons
)  # recipes swept on this model: their measurement beside the prediction
cat = state.catalog()
ranked, excluded, pipelines = doc.get("ranked", []), doc.get("excluded", []), doc.get("pipelines", [])
first_est = ranked[0]["estimate"] if ranked else None
original_gb = (
    float(first_est["baseline_memory_gb"]) if first_est else cons.model_params * 2 / 1e9
)  # 16-bit weights (+ KV cache when the model's shape is known)
model_doc = doc.get("model")
who = f"**{model_doc['name']}**" if model_doc else f"a **{size_label(cons.model_params)}** model"
where = device_labels.get(cons.device, cons.device) if cons.device else HARDWARE_LABELS[cons.hardware.value]

st.header("Recommendation")
st.markdown(
    f"For {who} (about **{original_gb:.1f} GB** in 16 bits, weights and KV cache at "
    f"{cons.context_length:,} tokens x {cons.batch_size}) on **{where}**: **{len(ranked)}** recipes ranked, "
    f"**{len(excluded)}** excluded. Recipes whose evidence meets your limits come first, then those whose "
    "quality is unknown; within each, the score is the sum of the rules under it."
)
if any(r.get("bundled") for r in ranked):
    st.page_link(
        state.PAGE_SWEEP,
        label="Sweep these on my model",
        icon=":material/stacked_line_chart:",
        query_params=cons.to_query(),
        help="Run the feasible recipes Shrinkwise can run itself, and their neighbours, on your model with one "
        "shared text; compare the measured front with these predictions.",
    )
measured.summary(doc, lambda rid: cat.recipes[rid].name if rid in cat.recipes else rid)
if not ranked:
    st.warning("No recipe passes these constraints.")
    nf = doc.get("nothing_fits") or {}
    small = nf.get("smallest")
    lines = []
    if small:
        lines.append(
            f"- Smallest footprint of a recipe that runs here: **{small['recipe']}** at **{small['memory_gb']:.1f} GB** "
            f"(weights {small['weights_gb']:.1f} + KV cache {small['kv_cache_gb']:.1f})."
        )
    for relax in nf.get("relaxations", []):
        lines.append(f"- With **{relax['change']}**, *{relax['recipe']}* would be recommended.")
    if lines:
        st.markdown("**What would make something fit**  \n" + "\n".join(lines))


def _fmt_drop(est: dict) -> str:
    drop = est.get("quality_drop_pct")
    if drop is None:
        return "unknown"
    q = est.get("quality") or {}
    lo, hi = q.get("low_pct"), q.get("high_pct")
    return f"~{drop:.1f}%" + (f" ({lo:.1f} to {hi:.1f})" if lo is not None and hi is not None else "")


def card(rank: int, r: dict, title_prefix: str = "") -> None:
    """One ranked recipe: what it is, its numbers, the commands that produce and serve it, a Run-it
    link when Shrinkwise bundles its compressor, then every rule that moved its score."""
    m = cat.methods.get(r.get("method", ""))
    est = r.get("estimate") or {}
    with st.container(border=True):
        st.markdown(f"#### {title_prefix}{rank}. {r.get('name') or r['id']}")
        if m:
            ui.badges(m)
            st.caption(f"Method: {m.name} · {m.phase.value} / {m.impact.value}. {m.summary}")
        config = (
            ", ".join(
                f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                for k, v in (r.get("config") or {}).items()
            )
            or "default"
        )
        st.markdown(
            f"`{r['id']}` · configuration **{config}** · format **{r.get('format')}** · engine "
            f"**{r.get('engine') or 'n/a'}**"
            + (" · checkpoint untouched (load time)" if r.get("load_time") else "")
        )
        m1, m2, m3, m4 = st.columns([1, 1.4, 1.4, 1.3], vertical_alignment="top")
        m1.metric("Score", f"{float(r.get('score', 0)):.2f}", help="Sum of the rule weights below")
        mem = est.get("memory_gb")
        fits = est.get("fits")
        budget = est.get("budget_gb")
        if fits is not None:
            delta, colour = (f"fits {budget:g} GB", "normal") if fits else (f"over {budget:g} GB", "inverse")
        elif mem is not None and original_gb:
            delta, colour = f"{(mem / original_gb - 1) * 100:+.0f}% vs 16-bit", "inverse"
        else:
            delta, colour = None, "off"
        m2.metric(
            "Weights + KV cache",
            f"{mem:.1f} GB" if mem is not None else "n/a",
            delta=delta,
            delta_color=colour,
            help=f"weights {est.get('weights_gb', 0):.2f} GB ({est.get('linear_bits', 'n/a')} bits per linear "
            f"weight) + KV cache {est.get('kv_cache_gb', 0):.2f} GB ({est.get('kv_bits', 16):g}-bit); runtime "
            f"overhead {est.get('overhead_gb', 0):.2f} GB shown, not charged",
        )
        m3.metric(
            "Expected quality drop",
            _fmt_drop(est),
            help="Relative perplexity rise or accuracy loss, from evidence rows; unknown = no evidence",
        )
        if m and m4.button("Open method page", key=f"rec_open_{title_prefix}{r['id']}", width="stretch"):
            state.open_method(m.id)
        run_it = (r.get("commands") or {}).get("run_it")
        if run_it:
            m4.page_link(
                state.PAGE_COMPRESS,
                label="Run it",
                icon=":material/play_arrow:",
                query_params=run_it,
            )
        q = est.get("quality") or {}
        st.caption("Quality estimate: " + (q.get("note") or est.get("quality_basis") or "n/a"))
        measured.measured_line(r.get("measured"))
        cmds = r.get("commands") or {}
        lines = []
        if cmds.get("compress"):
            lines.append("# produce it with Shrinkwise\n" + cmds["compress"])
        if cmds.get("produce"):
            lines.append("# produce it with the standard tool\n" + cmds["produce"])
        if not cmds.get("compress") and not cmds.get("produce"):
            lines.append("# nothing to produce: applied when the engine loads the model")
        for engine, cmd in list((cmds.get("serve") or {}).items())[:2]:
            lines.append(f"# serve it ({engine})\n{cmd}")
        st.code("\n\n".join(lines), language="bash")
        why = []
        for reason in r.get("reasons", []):
            w = reason.get("weight")
            num = isinstance(w, (int, float))
            mark = ":green[▲]" if num and w > 0 else (":red[▼]" if num and w < 0 else ":gray[•]")
            wtxt = f" `{w:+.2f}`" if num and w else ""
            src = f" :gray[({reason['source']})]" if reason.get("source") else ""
            why.append(f"{mark} {reason.get('text', reason.get('rule_id'))}{wtxt}{src}")
        st.markdown("**Why**  \n" + "  \n".join(why))


for i, r in enumerate(ranked[:TOP_CARDS], 1):
    card(i, r)
bundled = doc.get("bundled_alternative")
if bundled:
    st.subheader("Best recipe Shrinkwise can run itself")
    st.caption("The first recipe has no bundled compressor; this one does, with the settings below.")
    card(ranked.index(bundled) + 1 if bundled in ranked else 0, bundled, title_prefix="#")
if len(ranked) > TOP_CARDS:
    with st.expander(f"{len(ranked) - TOP_CARDS} more ranked recipes"):
        rows = []
        for i, r in enumerate(ranked[TOP_CARDS:], TOP_CARDS + 1):
            est = r.get("estimate") or {}
            rows.append(
                f"{i}. **{r.get('name') or r['id']}** (`{r['id']}`): score {float(r.get('score', 0)):.2f}, "
                f"{est.get('memory_gb', 0):.1f} GB, {_fmt_drop(est)} drop, {r.get('engine') or 'n/a'}"
            )
        st.markdown("\n".join(rows))  # one element, not one per recipe: the page stays light

with st.expander(f"Excluded recipes ({len(excluded)}): why each one is ruled out"):
    lines = []
    for e in excluded:
        why = "; ".join(
            str(x.get("text") or x.get("rule_id")) if isinstance(x, dict) else str(x)
            for x in e.get("reasons", [])
        )
        lines.append(f"- **{e.get('name') or e['id']}** (`{e['id']}`): {why}")
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
    m = cat.methods.get(r.get("method", ""))
    if m is None:
        continue
    est = r.get("estimate") or {}
    cands.append(
        Candidate(
            m.id,
            r.get("name") or m.name,
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
        "The top recipes by estimated memory (weights + KV cache) and expected quality drop; the label is "
        "the rank; recipes whose quality is unknown are not drawn. "
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
