"""History: every compression run, filterable by model and method, and for one model the size vs
perplexity-change chart of its runs with the Pareto front marked, so methods can be compared on the
user's own model. ``?model=<name>`` preselects a model."""

from __future__ import annotations

import time

import streamlit as st

from app import auth
from app.figures.history import points_from_runs, size_quality_figure
from jobs import ui as jobs_ui
from jobs.uploads import UploadError, delete_run_and_outputs, delete_upload, list_uploads, retention_s
from knowledge.tables import RunStatus

st.title("Run history")
st.caption(
    "Your compression runs on this server (an admin sees everyone's). Succeeded runs are also measured evidence: the method pages "
    "show them as “measured here” next to the papers' figures."
)

jobs_ui.ensure_worker_for_queue()
backend = jobs_ui.backend()


def _uploads_section() -> None:
    """Your uploads, with their size, and a Delete for each one no job is reading."""
    uploads = list_uploads(viewer.user, every_owner=viewer.is_admin)
    if not uploads:
        return
    total = sum(u.disk_bytes for u in uploads)
    with st.expander(f"Your uploads ({len(uploads)}, {jobs_ui.fmt_bytes(total)})", expanded=False):
        keep = retention_s()
        st.caption(
            (
                f"Uploads and job outputs are deleted {keep / 86400:g} days after they were made. "
                if keep
                else ""
            )
            + "Delete one sooner to free your quota."
        )
        for u in uploads:
            c1, c2 = st.columns([4, 1])
            c1.text(
                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(u.created))} · {', '.join(u.files)[:120]} · "
                f"{jobs_ui.fmt_bytes(u.disk_bytes)}" + (" · in use by a job" if u.in_use else "")
            )
            if c2.button("Delete", key=f"hist_del_upload_{u.upload_id}", disabled=u.in_use):
                try:
                    delete_upload(u.upload_id, u.owner)  # listed above only if this viewer may
                except UploadError as exc:
                    st.error(str(exc))
                else:
                    st.rerun()


viewer = auth.viewer()
_uploads_section()
runs = backend.list(owner=viewer.owner_filter)
if not runs:
    st.info("No runs yet. Start one on the Compress page.")
    st.page_link(jobs_ui.PAGE_COMPRESS, label="Compress a model", icon=":material/play_circle:")
    st.stop()

models = sorted({r.model_name for r in runs})
methods = sorted({r.method for r in runs})
wanted_model = st.query_params.get("model")
f1, f2, f3 = st.columns(3)
sel_models = f1.multiselect(
    "Model",
    models,
    default=[wanted_model] if wanted_model in models else [],
    key="hist_models",
    placeholder="all models",
)
sel_methods = f2.multiselect("Method", methods, default=[], key="hist_methods", placeholder="all methods")
sel_status = f3.multiselect(
    "Status", [s.value for s in RunStatus], default=[], key="hist_status", placeholder="any status"
)
shown = [
    r
    for r in runs
    if (not sel_models or r.model_name in sel_models)
    and (not sel_methods or r.method in sel_methods)
    and (not sel_status or r.status.value in sel_status)
]


def _row(r) -> dict:
    b, a = r.before_metrics, r.after_metrics
    change = (
        100 * (a["perplexity"] - b["perplexity"]) / b["perplexity"]
        if b.get("perplexity") and a.get("perplexity")
        else None
    )
    return {
        "run": r.id,
        "status": r.status.value,
        "model": r.model_name,
        "method": r.method,
        "queued": r.created_at.strftime("%Y-%m-%d %H:%M") if r.created_at else "",
        "settings": jobs_ui.settings_text(r.config),
        "perplexity": a.get("perplexity"),
        "ppl change %": None if change is None else round(change, 2),
        "size MB": None if a.get("size_bytes") is None else round(a["size_bytes"] / 1e6, 1),
        "bits/weight": a.get("bits_per_weight"),
        "time": jobs_ui.fmt_seconds(r.elapsed_s),
        "error": r.error or "",
    }


st.dataframe(
    [_row(r) for r in shown],
    hide_index=True,
    width="stretch",
    column_config={
        "perplexity": st.column_config.NumberColumn(format="%.3f"),
        "bits/weight": st.column_config.NumberColumn(format="%.2f"),
    },
)
st.caption(f"{len(shown)} of {len(runs)} runs.")

if shown:
    o1, o2 = st.columns([3, 1])
    open_id = o1.selectbox(
        "Open a run",
        [r.id for r in shown],
        key="hist_open",
        format_func=lambda i: next(
            f"#{r.id} {r.method} on {r.model_name} ({r.status.value})" for r in shown if r.id == i
        ),
    )
    with o2:
        st.write("")
        opened = next(r for r in shown if r.id == open_id)
        st.page_link(
            jobs_ui.PAGE_RESULT,
            label="Open",
            icon=":material/analytics:",
            query_params={"run": jobs_ui.link_id(opened)},
        )
    chosen = next(r for r in shown if r.id == open_id)
    if chosen.finished and st.button(
        f"Delete run #{open_id} and its files",
        key="hist_delete_run",
        help="Deletes the run, its measured evidence and its compressed checkpoint and reports.",
    ):
        try:
            delete_run_and_outputs(open_id)
        except UploadError as exc:
            st.error(str(exc))
        else:
            st.rerun()

# --- size vs quality on one model ------------------------------------------------------------------------
st.subheader("Size vs quality on one model")
done_models = sorted({r.model_name for r in runs if r.status is RunStatus.SUCCEEDED})
if not done_models:
    st.info("No succeeded runs yet: the chart appears once a run has finished.")
    st.stop()
default_model = (
    sel_models[0]
    if sel_models and sel_models[0] in done_models
    else wanted_model
    if wanted_model in done_models
    else done_models[0]
)
model = st.selectbox("Model", done_models, index=done_models.index(default_model), key="hist_chart_model")
on_model = [r for r in runs if r.model_name == model and (not sel_methods or r.method in sel_methods)]
points, original = points_from_runs(on_model)
if not points:
    st.info("No succeeded run on this model has both perplexity and size measured.")
else:
    st.plotly_chart(size_quality_figure(points, original), width="stretch", key="hist_chart")
    st.caption(
        "Lower and further left is better. The dotted line joins the runs on the Pareto front: no other "
        "run is both smaller and closer to the original's perplexity."
    )
