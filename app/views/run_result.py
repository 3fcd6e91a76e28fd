"""Run result: what one compression run did to the model (``?run=<public id>``; only the viewer's own
runs, or any for an admin). It reads top to bottom as a user needs it: a one-line verdict, then "Serve
it" (one block per format: GGUF for llama.cpp, compressed-tensors for vLLM and transformers, Shrinkwise
packed; each with its download and the exact commands, from :mod:`jobs.serve`), then the details:
before/after figures, the greedy generations side by side, the settings, the time each stage took
against its estimate, and the run report."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import streamlit as st

from app import auth
from compressors.base import all_compressors
from jobs import serve
from jobs import ui as jobs_ui
from knowledge.tables import RunStatus

st.title("Run result")

backend = jobs_ui.backend()
viewer = auth.viewer()
runs = backend.list(limit=200, owner=viewer.owner_filter)
wanted = st.query_params.get("run")
found = jobs_ui.find_run(wanted, viewer) if wanted else None
if wanted and found is None:
    # the same answer for a run that does not exist and one that belongs to someone else
    st.warning("There is no such run that you can open" + ("; showing your latest run." if runs else "."))
if not runs and found is None:
    st.info("No runs yet. Start one on the Compress page.")
    st.page_link(jobs_ui.PAGE_COMPRESS, label="Compress a model", icon=":material/play_circle:")
    st.stop()

ids = [r.id for r in runs]
if found is not None and found.id not in ids:
    runs.insert(0, found)
    ids.insert(0, found.id)
wanted_id = found.id if found is not None else ids[0]
by_id = {r.id: r for r in runs}
chosen = st.selectbox(
    "Run",
    ids,
    index=ids.index(wanted_id),
    key="res_run",
    format_func=lambda i: f"#{i} {by_id[i].compressor} on {by_id[i].model_name} ({by_id[i].status.value})",
)
info = backend.status(chosen)
if not viewer.can_see(info.owner):  # never: every listed run is the viewer's; kept as a second lock
    st.stop()
if jobs_ui.link_id(info) != st.query_params.get("run"):
    st.query_params["run"] = jobs_ui.link_id(info)

st.markdown(f"### {jobs_ui.job_title(info)} {jobs_ui.STATUS_BADGE[info.status]}")
if info.sweep_id is not None:  # a sweep's child: back to the sweep's chart (jobs.sweeps)
    from jobs.sweeps import get_sweep_by_id

    parent = get_sweep_by_id(info.sweep_id)
    if parent is not None and viewer.can_see(parent.owner):
        st.page_link(
            jobs_ui.PAGE_SWEEP,
            label=f"Part of a sweep of {len(parent.recipes or [])} recipes: compare them",
            icon=":material/stacked_line_chart:",
            query_params={"sweep": parent.public_id},
        )
st.caption(
    f"Method `{info.method}` · model {jobs_ui.plain(info.model_ref)} · queued {info.created_at:%Y-%m-%d %H:%M} UTC"
    + (f" · ran on {info.machine}" if info.machine else "")
)

if info.status is not RunStatus.SUCCEEDED:
    jobs_ui.job_panel(jobs_ui.link_id(info), viewer, key="res_job")
    st.stop()

# --- verdict, then how to serve it --------------------------------------------------------------------
b, a = info.before_metrics, info.after_metrics
runner = all_compressors().get(info.compressor)
label = jobs_ui.method_label(runner.name if runner is not None else info.compressor, info.config)
st.markdown("#### " + jobs_ui.plain(jobs_ui.verdict(label, b, a)))
art = info.artifacts


def _reader(path: Path) -> Callable[[], bytes]:
    return lambda: path.read_bytes()


def _zipper(folder: Path, target: Path) -> Callable[[], bytes]:
    def build() -> bytes:
        if not target.is_file():
            from compressors.storage import make_archive

            make_archive(folder, "zip", target)
        return target.read_bytes()

    return build


# Only the run's owner (or an admin) gets here. Every download is a callable: its bytes are made only when
# this session clicks the button, and Streamlit then serves them once from a /media URL (docs/deploy.md).
st.subheader("Serve it")
st.caption(
    "Each format with the commands that serve it, written for the names the download has on your disk."
)
DOWNLOAD_KEYS = {"gguf": "res_dl_gguf", "compressed-tensors": "res_dl_export", "packed": "res_dl_ckpt"}
for target in serve.serve_commands(art, f"run-{info.id}", prompt=(info.samples or {}).get("prompt")):
    with st.container(border=True):
        st.markdown(f"**{jobs_ui.plain(target.title)}** · {jobs_ui.plain(target.engines)}")
        if target.file is None:
            st.caption("Not available: " + jobs_ui.plain(target.missing or "this run has none."))
            continue
        st.download_button(
            f"Download {target.title} (.{target.download_name.rsplit('.', 1)[-1]})",
            _zipper(target.folder, target.file) if target.folder is not None else _reader(target.file),
            file_name=target.download_name,
            mime=target.mime,
            key=DOWNLOAD_KEYS.get(target.key, f"res_dl_{target.key}"),
            type="primary" if target.key == "gguf" else "secondary",
        )
        size = jobs_ui.fmt_bytes(target.file.stat().st_size) + " · " if target.file.is_file() else ""
        st.caption(size + jobs_ui.plain(target.detail))
        for command in target.commands:
            st.caption(command.label)
            st.code(command.code, language=command.language, wrap_lines=True)

# --- details ---------------------------------------------------------------------------------------------
st.divider()
st.subheader("Before and after")
rows = jobs_ui.comparison_rows(b, a)
tones = jobs_ui.comparison_tones(b, a)
TONE_CSS = {jobs_ui.GOOD: "color: #2e9e4f; font-weight: 600", jobs_ui.BAD: "color: #e0453a; font-weight: 600"}
table = pd.DataFrame(rows, columns=["figure", "before", "after", "change"])
styled = table.style.apply(lambda col: [TONE_CSS.get(t, "") for t in tones], subset=["change"])
# a static table, not a data grid: its cells wrap, so all four columns fit a phone's width (the grid
# showed a phone only its first columns and scrolled the change out of sight)
st.table(styled.hide(axis="index"))
st.caption("Change: green where the run made the figure better, red where it made it worse.")
grown = jobs_ui.size_growth_warning(b, a)
if grown:
    st.warning(grown)
if a.get("eval_tokens"):
    st.caption(
        f"Perplexity on {a['eval_tokens']:,} held-out tokens ({a.get('eval_windows')} windows of "
        f"{a.get('eval_seq_len')}"
        + (
            f", {jobs_ui.plain(a['evaluation']['reason'])}"
            if (a.get("evaluation") or {}).get("reason")
            else ""
        )
        + "); speeds are the best of repeated runs on this machine"
        + (f"; text: {jobs_ui.plain(a['text_source'])}" if a.get("text_source") else "")
        + ". The after figures are "
        "measured on the model loaded back from the saved packed checkpoint."
    )

# --- generations ---------------------------------------------------------------------------------------
samples = info.samples or {}
if samples.get("before") is not None or samples.get("after") is not None:
    st.subheader("Greedy generation")
    st.caption(f"Prompt: “{samples.get('prompt') or ''}”")
    g1, g2 = st.columns(2)
    with g1:
        st.markdown("**Before**")
        st.text(samples.get("before") or "–")
    with g2:
        st.markdown("**After**")
        st.text(samples.get("after") or "–")

# --- settings and timings -----------------------------------------------------------------------------
s1, s2 = st.columns(2)
with s1:
    st.subheader("Settings")
    st.dataframe(
        [{"setting": k, "value": str(v)} for k, v in info.config.items()],
        hide_index=True,
        width="stretch",
        height=jobs_ui.table_height(len(info.config)),
    )
    est = a.get("estimate") or {}
    if est:
        st.caption(
            f"Estimated before the run: {jobs_ui.fmt_bytes(est.get('peak_memory_bytes'))} peak, "
            f"{jobs_ui.fmt_seconds(est.get('seconds'))} for the compression itself."
        )
with s2:
    st.subheader("Timings")
    stage_estimate = (a.get("estimate") or {}).get("stages")
    timing_rows = jobs_ui.timing_rows(info.timings, info.elapsed_s, stage_estimate)
    if stage_estimate:
        st.caption("Each stage against the estimate shown before the run.")
    st.dataframe(timing_rows, hide_index=True, width="stretch", height=jobs_ui.table_height(len(timing_rows)))

# --- reports -------------------------------------------------------------------------------------------
st.subheader("Report")
d3, d4 = st.columns(2)
with d3:
    md = Path(art["report_md"]) if art.get("report_md") else None
    if md is not None and md.is_file():
        st.download_button(
            "Report (Markdown)",
            _reader(md),
            file_name=f"run-{info.id}-report.md",
            mime="text/markdown",
            key="res_dl_md",
        )
with d4:
    report = {
        "run": info.id,
        "model": info.model_name,
        "model_ref": info.model_ref,
        "method": info.method,
        "compressor": info.compressor,
        "config": info.config,
        "before": b,
        "after": a,
        "samples": samples,
        "timings": info.timings,
        "machine": info.machine,
        "artifacts": art,
    }
    st.download_button(
        "Report (JSON)",
        lambda: json.dumps(report, indent=2, default=str),
        file_name=f"run-{info.id}-report.json",
        mime="application/json",
        key="res_dl_json",
    )

st.page_link(
    jobs_ui.PAGE_HISTORY,
    label="Compare with other runs on this model",
    icon=":material/history:",
    query_params={"model": info.model_name},
)
if info.log_tail:
    with st.expander("Log"):
        st.code(info.log_tail, language=None)
