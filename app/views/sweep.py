"""Sweep: run several recipes on one model with one shared text, then compare them on one chart (issue 14).

Two states, both in the URL:

* **Set up** (no ``?sweep=``): the model (the demo or a path on the server), the recipes and the text
  budget. Opened from a recommendation (its constraints are the query: ``/sweep?model=smollm2-135m&...``),
  the recommendation's feasible bundled recipes and their neighbours are preselected and their predicted
  points and the user's limits are stored with the sweep; opened from the Compress page
  (``?source=path&path=...``), the user picks recipes and the recommender predicts them for the model's size.
  ``?recipes=a,b,c`` preselects recipes by id; ``calib_samples``, ``eval_windows``, ``seq_len`` the budget.
* **Follow and compare** (``?sweep=<public id>``): each child's progress, then the measured Pareto front
  with the predicted points and ranges, the recipe the limits select, and the measured-vs-predicted table.

The work is in :mod:`jobs.sweeps`; the charts in :mod:`app.figures.sweep`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app import auth, state
from app.figures.sweep import SIZE_AXES, pareto_figure, speed_figure
from compressors.base import CompressionError, CompressorId
from compressors.settings import int_param
from engine.constraints import FIELDS, Constraints, ConstraintsError
from jobs import preflight, sweeps
from jobs import ui as jobs_ui
from jobs.access import AccessDenied, check_server_path

P = "swp_"
DEMO = "Demo model (SmolLM2-135M-Instruct)"
SERVER = "Path on the server"
STATE_BADGE = {
    "queued": ":gray-badge[queued]",
    "running": ":blue-badge[running]",
    "succeeded": ":green-badge[succeeded]",
    "partial": ":orange-badge[partly succeeded]",
    "failed": ":red-badge[failed]",
    "cancelled": ":orange-badge[cancelled]",
}

qp = st.query_params
viewer = auth.viewer()


def _fmt(v: Any, spec: str, suffix: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{suffix}"


def _range(row: dict[str, Any]) -> str:
    lo, hi = row.get("predicted_low_pct"), row.get("predicted_high_pct")
    return "–" if lo is None or hi is None else f"{lo:+.2f} to {hi:+.2f}"


def comparison_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The measured-vs-predicted table as the page shows it (formatted text, one row per recipe)."""
    return pd.DataFrame(
        [
            {
                "recipe": r["name"],
                "status": r["status"],
                "predicted drop %": _fmt(r["predicted_drop_pct"], "+.2f"),
                "predicted range %": _range(r),
                "measured drop %": _fmt(r["measured_drop_pct"], "+.2f"),
                "measured − predicted (pts)": _fmt(r["drop_error_pct"], "+.2f"),
                "in range": "–" if r["in_range"] is None else ("yes" if r["in_range"] else "no"),
                "predicted bits/weight": _fmt(r["predicted_bits_per_weight"], ".2f"),
                "measured bits/weight": _fmt(r["measured_bits_per_weight"], ".2f"),
                "measured size": _fmt(r["measured_size_mb"], ".2f", " MB"),
                "decode tokens/s": _fmt(r["decode_tokens_per_s"], ".1f"),
            }
            for r in rows
        ]
    )


# ---------------------------------------------------------------------------------------------------
# follow and compare one sweep


def _limits_text(limits: dict[str, Any]) -> str:
    parts = []
    if limits.get("max_quality_drop") is not None:
        parts.append(f"quality drop at most {float(limits['max_quality_drop']):g}%")
    if limits.get("memory_gb") is not None:
        parts.append(f"weights + KV cache at most {float(limits['memory_gb']):g} GB")
    return " and ".join(parts) or "no limits"


def _results(sweep: Any, jobs: list[Any]) -> None:
    items = [sweeps.SweepItem.from_json(r) for r in sweep.recipes or []]
    predicted = dict(sweep.predicted or {})
    limits = dict(sweep.limits or {})
    points = sweeps.measured_points(sweep, jobs)
    st.subheader("Measured against predicted")
    if not points:
        st.info("No recipe has finished yet: the chart appears with the first measurement.")
        return
    recipes = [(i.recipe, i.name) for i in items]
    selected = sweeps.select_within_limits(points, limits, predicted)
    if selected is not None:
        st.success(
            f"Your limits ({_limits_text(limits)}) select **{jobs_ui.plain(selected.name)}**: measured quality "
            f"drop {selected.quality_drop_pct:+.2f}%, "
            + (f"{selected.size_bytes / 1e6:.2f} MB on disk" if selected.size_bytes else "size not measured")
            + " (the smallest measured recipe within the limits)."
        )
    else:
        st.warning(f"No measured recipe meets your limits ({_limits_text(limits)}).")
    tab_size, tab_speed = st.tabs(["Size vs quality drop", "Speed vs quality drop"])
    with tab_size:
        axis = st.radio(
            "x axis",
            ["bits", "size"],
            format_func={"bits": "bits per weight (whole model)", "size": "weights on disk (MB)"}.get,
            horizontal=True,
            key=P + "axis",
        )
        st.plotly_chart(
            pareto_figure(
                recipes,
                points,
                predicted,
                sweeps.size_front(points, SIZE_AXES[axis or "bits"][1]),
                selected,
                limits.get("max_quality_drop"),
                axis=axis or "bits",
            ),
            key=P + "pareto",
            config={"displayModeBar": False},
        )
        basis = (limits.get("constraints") or {}).get("model")
        st.caption(
            "Filled markers: measured on this model with the same text. Open diamonds: the recommender's "
            "prediction when the sweep started"
            + (f" (for the bundled model {jobs_ui.plain(basis)})" if basis else " (for a model of this size)")
            + ", with its range as an error bar; a dotted line joins each prediction to its measurement. "
            "The dashed black line is the measured Pareto front; the ring marks the recipe your limits "
            "select. Recipes without a knowledge-base prediction (neighbours) have no diamond."
        )
    with tab_speed:
        before_decode = next(
            (
                j.before_metrics.get("decode_tokens_per_s")
                for j in jobs
                if j.before_metrics.get("decode_tokens_per_s")
            ),
            None,
        )
        if any(p.decode_tokens_per_s for p in points):
            st.plotly_chart(
                speed_figure(
                    recipes, points, sweeps.speed_front(points), before_decode, limits.get("max_quality_drop")
                ),
                key=P + "speed",
                config={"displayModeBar": False},
            )
            st.caption(
                "Decode speed measured on this machine by Shrinkwise's own kernels; the recommender "
                "predicts no speed, so only measurements are drawn."
            )
        else:
            st.info("These runs did not measure speed.")
    st.markdown("**Measured vs predicted, recipe by recipe**")
    rows = sweeps.comparison_rows(items, predicted, jobs, points)
    st.dataframe(
        comparison_frame(rows), hide_index=True, key=P + "table", height=jobs_ui.table_height(len(rows))
    )
    st.caption(
        "Quality drop: the perplexity rise over the same model measured before compression, on the same "
        "held-out text for every recipe. Predicted bits/weight: the recommender's weights against the same "
        "weights in 16 bits."
    )


@st.fragment(run_every=2.0)
def _live(sweep_id: str) -> None:
    jobs_ui.ensure_worker_for_queue(force=False)
    sweep = sweeps.get_sweep(sweep_id)
    if sweep is None:
        return
    _body(sweep)
    if sweeps.sweep_status(sweep).finished:
        st.rerun()  # every child ended: redraw the page once more, without the timer


def _body(sweep: Any) -> None:
    jobs = sweeps.children(sweep)
    status = sweeps.derive_status(j.status for j in jobs)
    counts = ", ".join(f"{n} {name}" for name, n in status.counts.items() if n)
    st.markdown(
        f"**{status.done} of {status.total} recipes finished** {STATE_BADGE[status.state]} · {counts}"
    )
    st.progress(status.done / status.total if status.total else 0.0)
    if not status.finished and st.button("Cancel the sweep", key=P + "cancel"):
        sweeps.cancel_sweep(sweep, backend=jobs_ui.backend())
        st.rerun()
    with st.expander("Each recipe's job", expanded=not status.finished):
        for j in jobs:
            jobs_ui.render_job(j, key=f"{P}job")
    _results(sweep, jobs)


def show_sweep(ref: str) -> None:
    sweep = sweeps.get_sweep(ref)
    if sweep is None or not viewer.can_see(sweep.owner):
        st.warning("There is no such sweep that you can open.")
        st.page_link("views/sweep.py", label="Set up a new sweep", icon=":material/add:")
        return
    items = sweep.recipes or []
    st.markdown(
        f"### {len(items)} recipes on {jobs_ui.plain(sweep.model_name)}\n"
        f"Started {sweep.created_at:%Y-%m-%d %H:%M} UTC"
        + (" from a recommendation" if sweep.origin == "recommendation" else "")
        + f" · text: {jobs_ui.plain((sweep.calibration or {}).get('eval') or 'built-in')}, "
        + ", ".join(
            f"{k.replace('_', ' ')} {v}"
            for k, v in (sweep.calibration or {}).items()
            if k in ("n_calib_samples", "eval_windows", "eval_seq_len")
        )
        + ". The original is measured once and shared by every recipe."
    )
    if sweeps.sweep_status(sweep).finished:
        _body(sweep)
    else:
        _live(ref)
    st.page_link("views/sweep.py", label="Set up another sweep", icon=":material/add:")


# ---------------------------------------------------------------------------------------------------
# set up a sweep


def _qp_int(name: str, default: int, lo: int, hi: int) -> int:
    value, refusal = int_param(qp.get(name), lo, hi, name)
    if refusal:
        st.warning(jobs_ui.plain(refusal) + " The default is used.")
    return default if value is None else value


def setup() -> None:
    cat = state.catalog()
    problems: list[str] = []
    query = {k: qp.get(k) for k in qp if k in FIELDS}
    constraints: Constraints | None = None
    rec = None
    if query:
        try:
            constraints = Constraints.from_query(query, strict=False)
        except ConstraintsError as exc:
            st.error(f"The link's constraints are not valid: {exc}")
        else:
            rec = state.recommend(constraints)
            st.caption(
                "From your recommendation: its feasible recipes that Shrinkwise can run itself, and their "
                "neighbours, are preselected; their predicted points and your limits are kept with the sweep."
            )

    st.subheader("1. Model")
    sources = {"demo": DEMO, "path": SERVER}
    source = st.radio(
        "Model source",
        list(sources.values()),
        key=P + "source",
        horizontal=True,
        index=list(sources).index(str(qp.get("source"))) if qp.get("source") in sources else 0,
        help="An uploaded model: upload it on the Compress page first (it is checked there), then give its "
        "folder here, or sweep from there.",
    )
    model_ref: str | None = None
    if source == DEMO:
        model_ref = "demo"
    else:
        path = st.text_input("Path on the server", key=P + "path", value=qp.get("path", ""))
        if path.strip():
            try:
                model_ref = str(check_server_path(path.strip(), viewer))
            except AccessDenied as exc:
                st.error(str(exc))
    info = None
    if model_ref:
        info, error = jobs_ui.inspect_model(model_ref)
        if error:
            st.error(jobs_ui.plain(error))
            problems.append("the model cannot be used")
        elif info is not None:
            st.caption(
                jobs_ui.plain(
                    f"{info.architecture}, {jobs_ui.fmt_params(info.n_params)} parameters, "
                    f"{jobs_ui.fmt_bytes(info.size_on_disk_bytes)} on disk"
                )
            )
    else:
        problems.append("no model chosen")

    st.subheader("2. Recipes")
    known = {rid: item for rid, r in cat.recipes.items() if (item := sweeps.item_for_recipe(r)) is not None}
    preselected: list[sweeps.SweepItem] = []
    if rec is not None:
        preselected = sweeps.build_recipe_set(rec.ranked_ids, cat.recipes)
    wanted = [r for r in (qp.get("recipes") or "").split(",") if r]
    options: dict[str, sweeps.SweepItem] = dict(known)
    for item in preselected:
        options.setdefault(item.recipe, item)
    for item in list(options.values()):
        for n in sweeps.neighbours(item) if item.recipe in wanted else []:
            options.setdefault(n.recipe, n)
    default = [i.recipe for i in preselected] + [r for r in wanted if r in options]
    chosen_ids = st.multiselect(
        "Recipes to run",
        list(options),
        default=list(dict.fromkeys(default)),
        key=P + "recipes",
        format_func=lambda rid: (
            f"{options[rid].name} · {options[rid].compressor} "
            + ", ".join(
                f"{k}={v}"
                for k, v in options[rid].config.items()
                if k in ("bits", "group_size", "pattern", "sparsity", "type")
            )
        ),
        help="Recipes that Shrinkwise can run itself (each names its bundled compressor), plus neighbours "
        "of the preselected ones: bits one step either way, group size 64/128, unstructured vs 2:4.",
    )
    chosen = [options[rid] for rid in chosen_ids]
    if len(chosen) > sweeps.MAX_RECIPES:
        problems.append(f"at most {sweeps.MAX_RECIPES} recipes per sweep")
    if not chosen:
        problems.append("no recipe chosen")
    if info is not None:
        for item in chosen:
            try:
                preflight.check_compatible(CompressorId(item.compressor), info)
            except CompressionError as exc:
                st.error(f"{jobs_ui.plain(item.name)} cannot run on this model: {jobs_ui.plain(exc)}")
                problems.append(f"{item.name} cannot run on this model")

    st.subheader("3. Shared text and limits")
    st.caption(
        "Every recipe is calibrated and measured on the same text (Python's documentation, built in); the "
        "original model is measured once and shared."
    )
    b1, b2, b3, b4 = st.columns(4)
    n_calib = b1.number_input(
        "Calibration windows", 1, 1024, _qp_int("calib_samples", 32, 1, 1024), key=P + "n_calib"
    )
    n_eval = b2.number_input(
        "Evaluation windows", 1, 200, _qp_int("eval_windows", 8, 1, 200), key=P + "n_eval"
    )
    seq_len = b3.number_input(
        "Window length (tokens)", 16, 4096, _qp_int("seq_len", 256, 16, 4096), key=P + "seq_len"
    )
    speed = b4.toggle("Measure speed", value=qp.get("speed", "true") != "false", key=P + "speed")
    l1, l2 = st.columns(2)
    max_drop = l1.number_input(
        "Acceptable quality drop (%)",
        0.0,
        100.0,
        float(constraints.max_quality_drop) if constraints else 5.0,
        step=0.5,
        key=P + "max_drop",
    )
    budget = l2.number_input(
        "Memory budget: weights + KV cache (GB)",
        min_value=0.001,
        max_value=10000.0,
        value=constraints.memory_gb if constraints and constraints.memory_gb else None,
        placeholder="no budget",
        key=P + "budget",
    )

    st.subheader("4. Run")
    if problems:
        st.caption("Fix first: " + "; ".join(dict.fromkeys(problems)) + ".")
    if st.button("Start the sweep", type="primary", disabled=bool(problems), key=P + "start") and info:
        basis = constraints
        if basis is None:  # from the Compress page: predict for a model of this size
            basis = Constraints.from_dict(
                {"model_params": float(info.n_params), "max_quality_drop": max_drop}
            )
        ranked = rec.ranked_ids if rec is not None else []
        predicted = sweeps.predictions(basis, cat, chosen, ranked)
        limits = sweeps.limits_of(basis)
        limits["max_quality_drop"] = float(max_drop)
        limits["memory_gb"] = None if budget is None else float(budget)
        calibration = {
            "eval": "pydoc_data.topics (held-out part)",
            "n_calib_samples": int(n_calib),
            "calib_seq_len": int(seq_len),
            "eval_windows": int(n_eval),
            "eval_seq_len": int(seq_len),
            "measure_speed": bool(speed),
        }
        try:
            sweep = sweeps.create_sweep(
                model_ref="demo" if info.source == "demo" else str(info.path or info.ref),
                model_name=jobs_ui.model_name(info),
                items=chosen,
                calibration=calibration,
                owner=viewer.user,
                predicted=predicted,
                limits=limits,
                model_key=constraints.model if constraints else None,
                origin="recommendation" if rec is not None else "compress",
                backend=jobs_ui.backend(),
            )
        except CompressionError as exc:
            st.error(f"Not started: {jobs_ui.plain(exc)}")
        else:
            st.query_params.from_dict({"sweep": sweep.public_id})
            st.rerun()


st.title("Sweep recipes on your model")
st.caption(
    "Runs several recipes on one model with one shared calibration and evaluation text, then draws the "
    "measured Pareto front next to what the recommender predicted."
)
if qp.get("sweep"):
    show_sweep(str(qp.get("sweep")))
else:
    mine = sweeps.list_sweeps(owner=viewer.owner_filter, limit=10)
    if mine:
        with st.expander(f"Your recent sweeps ({len(mine)})"):
            for s in mine:
                st.page_link(
                    "views/sweep.py",
                    label=f"{len(s.recipes or [])} recipes on {jobs_ui.plain(s.model_name)}, "
                    f"{s.created_at:%Y-%m-%d %H:%M} UTC: {sweeps.sweep_status(s).state}",
                    query_params={"sweep": s.public_id},
                )
    setup()
