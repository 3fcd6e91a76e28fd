"""Compress: pick a model (upload, server path or the demo), a method and its settings, and run it as a
background job; the page follows the job live. URL parameters: ``?method=<knowledge-base method id>``
and/or ``?compressor=<compressor id>`` (a method page links with both) and any setting
(``&bits=4&group_size=128``) pre-fill the form; ``?job=<id>`` shows that job. The run is filed under
the knowledge-base method, never under the compressor's id, so its measured figures reach that method's
page; ``?method=<compressor id>`` (links made before the two were told apart) still works."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import streamlit as st

from app import auth, state
from app import model_sources as sources
from compressors.base import Calibration, CompressionError, CompressorId, all_compressors
from compressors.settings import defaults_from_query, int_param
from jobs import preflight
from jobs import ui as jobs_ui
from jobs.backend import JobSpec
from jobs.uploads import (
    ARCHIVE_SUFFIXES,
    MAX_FILES,
    max_unpacked_bytes,
    max_upload_bytes,
    retention_s,
    save_checked_model_upload,
    save_text_upload,
    upload_quota_bytes,
)
from knowledge.ids import MethodId

P = "cmp_"  # session-state prefix of this page
JOB_ANCHOR = "shrinkwise-job-panel"  # the job panel's anchor, scrolled to after Run
DEMO = "Demo model (SmolLM2-135M-Instruct)"
UPLOAD = "Upload a checkpoint"
BUILTIN_TEXT = "Built-in text (Python's documentation, no download)"
OWN_TEXT = "Upload text files"

st.title("Compress a model")
st.caption(
    "Runs a bundled compressor on your model in the background, measures it before and after on the "
    "same held-out text, and keeps the compressed checkpoint for download."
)

qp = st.query_params
viewer = auth.viewer()
job_param = qp.get("job")
if job_param:
    st.html(f'<div id="{JOB_ANCHOR}"></div>')
shown_job = jobs_ui.job_panel(job_param, viewer, key="cmp_job") if job_param else None
if shown_job is not None and st.session_state.pop(P + "scroll_to_job", False):
    jobs_ui.scroll_to(JOB_ANCHOR)
jobs_ui.active_jobs(viewer, exclude=shown_job.id if shown_job else None)

problems: list[str] = []

# --- 1. the model --------------------------------------------------------------------------------
st.subheader("1. Model")
SOURCES = {"demo": DEMO, "upload": UPLOAD, **sources.SOURCES}  # folder, HF cache, hub id: app/model_sources
source = st.radio(
    "Model source",
    list(SOURCES.values()),
    key=P + "source",
    horizontal=True,
    index=list(SOURCES).index(qp.get("source")) if qp.get("source") in SOURCES else 0,
    help="The demo model ships with Shrinkwise. An upload is a .zip/.tar.gz of a Hugging Face model "
    "folder, its loose files (config.json, *.safetensors, tokenizer files), or one .gguf.",
)
model_ref: str | None = None
if source == DEMO:
    model_ref = "demo"
elif source == UPLOAD:
    files = st.file_uploader(
        "Checkpoint",
        accept_multiple_files=True,
        key=P + "files",
        type=[s.lstrip(".") for s in ARCHIVE_SUFFIXES]
        + ["gz", "json", "safetensors", "gguf", "txt", "model", "bin", "pt", "pth", "jinja"],
        help="One archive, or the loose files of one model folder, or one .gguf. Saved on the server under "
        "uploads/ and kept after the run.",
    )
    st.caption(
        f"Up to {max_upload_bytes() / 2**20:,.0f} MB per upload, {max_unpacked_bytes() / 2**20:,.0f} MB once "
        f"unpacked and {MAX_FILES:,} files and folders; all your uploads together up to "
        f"{upload_quota_bytes() / 2**20:,.0f} MB"
        + (f". Uploads are deleted after {retention_s() / 86400:g} days" if retention_s() else "")
        + "; delete your own sooner on the History page. "
        + sources.other_ways_caption()
    )
    if files:
        sig = hashlib.sha1(repr([(f.name, f.size, f.file_id) for f in files]).encode()).hexdigest()
        if st.session_state.get(P + "upload_sig") != sig:
            st.session_state[P + "upload_sig"] = sig
            st.session_state.pop(P + "upload_ref", None)
            st.session_state.pop(P + "upload_error", None)
            with st.spinner("Saving and checking the upload…"):
                try:  # an upload the model check refuses (pickle, encoder, corrupt) is deleted at once
                    saved, _ = save_checked_model_upload(
                        [(f.name, f) for f in files], jobs_ui.check_model, owner=viewer.user
                    )
                    st.session_state[P + "upload_ref"] = saved.model_ref
                except CompressionError as exc:
                    st.session_state[P + "upload_error"] = str(exc)
        if st.session_state.get(P + "upload_error"):
            st.error(jobs_ui.plain(st.session_state[P + "upload_error"]))
            problems.append("the upload was refused")
        model_ref = st.session_state.get(P + "upload_ref")
    else:
        st.info("Choose the files of a model to upload.")
else:
    model_ref = sources.pick_model(next(k for k, v in SOURCES.items() if v == source), qp, viewer, problems)

info = None
if model_ref:
    info, error = jobs_ui.inspect_model(model_ref)
    if error:
        st.error(jobs_ui.plain(error))
        problems.append("the model cannot be used")
    else:
        cols = st.columns([2, 1, 1, 1, 1])
        cols[0].metric("Architecture", info.architecture)
        cols[1].metric("Parameters", jobs_ui.fmt_params(info.n_params))
        cols[2].metric("Weights dtype", info.dtype)
        cols[3].metric("Size on disk", jobs_ui.fmt_bytes(info.size_on_disk_bytes))
        cols[4].metric("Layers", info.n_layers)
        st.caption(  # every name here comes from the user's files: shown as typed, never as Markdown
            jobs_ui.plain(
                f"{info.path or info.ref} · {info.model_type}, hidden size {info.hidden_size}, "
                f"vocabulary {info.vocab_size:,}, files: {', '.join(info.weight_files[:4])}"
                + (" …" if len(info.weight_files) > 4 else "")
            )
        )
elif "the path is not available" not in problems:
    problems.append("no model chosen")

# --- 2. method and settings --------------------------------------------------------------------------
st.subheader("2. Method and settings")
compressors = all_compressors()
catalog = state.catalog()
wanted: str | None = qp.get("method")  # knowledge-base method id
wanted_cid: str | None = qp.get("compressor")  # compressor id
if wanted and wanted not in catalog.methods and wanted in compressors and not wanted_cid:
    wanted, wanted_cid = None, wanted  # an old link: ?method=<compressor id>
if wanted_cid and wanted_cid not in compressors:
    st.warning(f"No bundled compressor {jobs_ui.plain(repr(wanted_cid))}; choose one of the methods below.")
    wanted_cid = None
if wanted:
    runners = [c for c, cls in compressors.items() if wanted in cls.implements]
    if wanted not in catalog.methods or not runners:
        st.warning(
            f"No bundled compressor runs the method {jobs_ui.plain(repr(wanted))}; choose one of the methods below."
        )
        wanted = None
    elif wanted_cid not in runners:
        if wanted_cid:
            st.warning(
                f"The compressor {wanted_cid!r} does not run {state.method_name(wanted)}; "
                f"{compressors[runners[0]].name} does, and is chosen instead."
            )
        wanted_cid = runners[0]
ids: list[str] = list(compressors)
cid = CompressorId(
    st.selectbox(
        "Method",
        ids,
        index=ids.index(wanted_cid) if wanted_cid else ids.index("gptq") if "gptq" in ids else 0,
        key=P + "method",
        format_func=lambda c: f"{compressors[c].name} ({compressors[c].phase}, {compressors[c].impact})",
    )
    or ids[0]  # never taken: the box has an index, so it always holds a value
)
comp_cls = compressors[cid]
if comp_cls.summary:
    st.caption(comp_cls.summary)
# The knowledge-base method the run is filed under: the one asked for when this compressor runs it,
# else the compressor's own; a compressor that runs several methods lets the user say which.
implements = list(comp_cls.implements)
method_id: MethodId = MethodId(wanted) if wanted and wanted in implements else implements[0]
if len(implements) > 1:
    method_id = st.selectbox(
        "Filed under the method",
        implements,
        index=implements.index(method_id),
        key=f"{P}{cid}_kb_method",
        format_func=state.method_name,
        help="This compressor runs more than one method of the knowledge base; its measured figures "
        "are shown on the page of the one chosen here.",
    )
else:
    st.caption(f"Measured figures are filed under the method **{state.method_name(method_id)}**.")


values: dict[str, Any] = {}
fields = comp_cls.config_cls.describe()
from_query, query_refusals = defaults_from_query(fields, qp.to_dict())
# a link's out-of-range or unreadable setting is refused, never replaced by another value: the page
# says so and does not run until the link is fixed (below, with the text-budget parameters)
refused_params = [f["name"] for f in fields if f["name"] in qp and f["name"] not in from_query]
cols = st.columns(3)
for i, f in enumerate(fields):
    name, typ = f["name"], f["type"]
    default = from_query.get(name, f["default"])
    label, help_ = name.replace("_", " "), f.get("help")
    key = f"{P}{cid}_{name}"
    with cols[i % 3]:
        if f.get("choices"):
            choices = list(f["choices"])
            values[name] = st.selectbox(
                label, choices, index=choices.index(default) if default in choices else 0, key=key, help=help_
            )
        elif typ == "bool":
            values[name] = st.checkbox(label, value=bool(default), key=key, help=help_)
        elif typ == "int":
            values[name] = int(
                st.number_input(
                    label,
                    value=int(default),
                    step=1,
                    key=key,
                    help=help_,
                    min_value=f.get("min"),
                    max_value=f.get("max"),
                )
            )
        elif typ == "float":
            values[name] = float(
                st.number_input(
                    label,
                    value=float(default),
                    key=key,
                    help=help_,
                    format="%g",
                    step=0.01,
                    min_value=f.get("min"),
                    max_value=f.get("max"),
                )
            )
        else:
            values[name] = st.text_input(
                label, value="" if default is None else str(default), key=key, help=help_
            )

cost = None
try:
    config = comp_cls.config_cls.from_dict(values).to_dict()
except CompressionError as exc:
    st.error(f"These settings are not accepted: {jobs_ui.plain(exc)}")
    problems.append("settings rejected")
    config = None
compatible = True
if info is not None:
    try:
        preflight.check_compatible(cid, info)
    except CompressionError as exc:
        st.error(f"{comp_cls.name} cannot run on this model: {jobs_ui.plain(exc)}")
        problems.append("architecture not supported")
        compatible = False


def _use_setting(compressor: str, change: dict[str, Any]) -> None:
    """A one-click fix: the setting goes into the link (so it survives a reload) and its widget is
    rebuilt from there."""
    for name, value in change.items():
        st.session_state.pop(f"{P}{compressor}_{name}", None)
        st.query_params[name] = str(value).lower() if isinstance(value, bool) else str(value)


# settings that block an export, said before the run (the rules: jobs/export_check.py)
if config is not None and info is not None and compatible:
    exports = preflight.export_check(cid, info, config)
    for text in exports.blockers:  # settings can fix them: a warning; the method's own limits: said
        if exports.fixes:
            st.warning(text, icon=":material/block:")
        else:
            st.info(text, icon=":material/info:")
    for text in exports.notes:
        st.caption(text)
    if exports.fixes:
        for i, (fix_col, (fix_label, change)) in enumerate(
            zip(st.columns(len(exports.fixes)), exports.fixes, strict=True)
        ):
            fix_col.button(fix_label, key=f"{P}fix_{i}", on_click=_use_setting, args=(cid, change))

# the estimate depends on the calibration size chosen below; it is shown here, computed there
cost_box = st.container()

# --- 3. text -------------------------------------------------------------------------------------------
st.subheader("3. Calibration and evaluation text")
text_choice = st.radio(
    "Text",
    [BUILTIN_TEXT, OWN_TEXT],
    key=P + "text",
    horizontal=True,
    help="Calibration text feeds the compressor (GPTQ, SparseGPT, Wanda, …); evaluation text "
    "measures perplexity. They never overlap.",
)
calib_path = eval_path = None
if text_choice == OWN_TEXT:
    t1, t2 = st.columns(2)
    calib_file = t1.file_uploader(
        "Calibration text (.txt)",
        type=["txt"],
        key=P + "calib_file",
        help="Split 4:1 into calibration and evaluation when no evaluation file is given.",
    )
    eval_file = t2.file_uploader("Evaluation text (.txt, optional)", type=["txt"], key=P + "eval_file")
    for upl, slot in ((calib_file, "calib"), (eval_file, "eval")):
        if upl is None:
            st.session_state.pop(f"{P}{slot}_saved", None)
            continue
        sig = (upl.name, upl.size, upl.file_id)
        saved = st.session_state.get(f"{P}{slot}_saved")
        if not saved or saved[0] != sig:
            try:
                saved = (sig, str(save_text_upload(upl.name, upl, owner=viewer.user)), None)
            except CompressionError as exc:
                saved = (sig, None, str(exc))
            st.session_state[f"{P}{slot}_saved"] = saved
        if saved[2]:
            st.error(jobs_ui.plain(saved[2]))
            problems.append("a text file was refused")
        elif slot == "calib":
            calib_path = saved[1]
        else:
            eval_path = saved[1]
    if calib_file is None and eval_file is None:
        st.info("Choose a text file, or use the built-in text.")
        problems.append("no text chosen")


def _qp_int(name: str, default: int, lo: int, hi: int) -> int:
    value, refusal = int_param(qp.get(name), lo, hi, name)
    if refusal:
        query_refusals.append(refusal)
        refused_params.append(name)
    return default if value is None else value


with st.expander("How much text the run uses"):
    auto_eval = st.checkbox(
        "Evaluation windows: bounded by the compression time",
        value="eval_windows" not in qp and "seq_len" not in qp,
        key=P + "auto_eval",
        help="20 windows of 512 tokens where measuring is cheap; on a large model, fewer or shorter ones, so "
        "that measuring before and after takes no longer than the compression (compressors/eval_budget.py). "
        "Untick to set them yourself.",
    )
    b1, b2, b3 = st.columns(3)
    n_calib = b1.number_input(
        "Calibration windows",
        1,
        1024,
        _qp_int("calib_samples", 128, 1, 1024),
        key=P + "n_calib",
        help="Windows of text the compressor sees (GPTQ's paper uses 128 of 2048 tokens).",
    )
    n_eval = b2.number_input(
        "Evaluation windows",
        1,
        200,
        _qp_int("eval_windows", 20, 1, 200),
        key=P + "n_eval",
        help="Non-overlapping held-out windows for perplexity (the same for before and after).",
        disabled=auto_eval,
    )
    seq_len = b3.number_input(
        "Window length (tokens)", 16, 4096, _qp_int("seq_len", 512, 16, 4096), key=P + "seq_len"
    )
if query_refusals:
    for refusal in query_refusals:
        st.warning(
            jobs_ui.plain(refusal)
            + " The link's value is not used and no other value replaces it: fix or remove it "
            "in the address, or clear the refused parameters here."
        )
    problems.append("the link has settings out of range (" + ", ".join(dict.fromkeys(refused_params)) + ")")
    if st.button("Clear the refused link parameters", key=P + "clear_qp"):
        for name in refused_params:
            del st.query_params[name]
        st.rerun()
budget = {
    "n_calib_samples": int(n_calib),
    "calib_seq_len": int(seq_len),
    # bounded windows: left to the run, which chooses them as the estimate below does
    **({} if auto_eval else {"eval_windows": int(n_eval), "eval_seq_len": int(seq_len)}),
}

with cost_box:
    if config is not None and info is not None and compatible:
        try:
            try:  # an earlier run's measurement of the original on the same files and text is reused
                eval_text = preflight.eval_text_of(calib_path, eval_path)
                before_s = (
                    None
                    if auto_eval
                    else preflight.cached_before_seconds(
                        info, calib_path, eval_path, int(n_eval), int(seq_len)
                    )
                )
            except (CompressionError, OSError, ValueError):
                eval_text, before_s = None, None
            cost = preflight.estimate_cost(
                cid,
                info,
                config,
                Calibration(int(n_calib), int(seq_len)),
                eval_windows=None if auto_eval else int(n_eval),
                eval_seq_len=None if auto_eval else int(seq_len),
                before_seconds=before_s,
                eval_text=eval_text,
            )
        except CompressionError as exc:
            st.error(f"{comp_cls.name} cannot run on this model with these settings: {jobs_ui.plain(exc)}")
            problems.append("settings rejected")
    if cost is not None:
        c1, c2, c3 = st.columns(3)
        c1.metric("Estimated peak memory", jobs_ui.fmt_bytes(cost.estimate.peak_memory_bytes))
        c2.metric(
            "Estimated time",
            jobs_ui.fmt_seconds(cost.stages.get("total", cost.estimate.seconds)),
            help="Every stage of the run: loading, measuring the original, compressing, saving, measuring the "
            "result and exporting. Each is an operation count for the model's shape divided by the throughput a "
            "short probe measured on this machine (measuring the original: the time it took, when an earlier "
            "run measured the same files and text).",
        )
        c3.metric("Free memory now", jobs_ui.fmt_bytes(cost.free_memory_bytes))
        if cost.stages:
            st.caption("By stage: " + jobs_ui.stage_estimate_text(cost.stages))
        if cost.eval_plan is not None:
            st.caption(f"Evaluation: {cost.eval_plan.describe()}.")  # our own words, no user text
        if cost.estimate.note:
            st.caption(cost.estimate.note)
        if cost.estimate.uncertainty > 1 or cost.estimate.basis:
            low, high = cost.estimate.seconds_range
            st.caption(
                f"The compression is expected to take between {jobs_ui.fmt_seconds(low)} and "
                f"{jobs_ui.fmt_seconds(high)}: operation counts "
                f"divided by this machine's measured throughput ({cost.estimate.basis})."
            )
        if cost.warning:
            st.warning(cost.warning)


@st.cache_data(show_spinner="Counting tokens…", max_entries=32)
def _check_text(
    ref: str, calib: str | None, evalp: str | None, needs_calibration: bool, n_eval: int, seq_len: int
) -> tuple[Any, str | None]:
    try:
        return preflight.check_texts(
            ref,
            calib,
            evalp,
            needs_calibration=needs_calibration,
            eval_windows=n_eval,
            eval_seq_len=seq_len,
            calib_seq_len=seq_len,
        ), None
    except CompressionError as exc:
        return None, str(exc)


if info is not None and not (text_choice == OWN_TEXT and calib_path is None and eval_path is None):
    plan = cost.eval_plan if cost is not None and auto_eval else None
    text_check, text_error = _check_text(
        model_ref,
        calib_path,
        eval_path,
        comp_cls.needs_calibration,
        plan.windows if plan else int(n_eval),
        plan.seq_len if plan else int(seq_len),
    )
    if text_error:
        st.error(jobs_ui.plain(text_error))
        problems.append("text too short")
    else:
        st.caption(
            f"{text_check.source}: {text_check.calibration_tokens:,} calibration tokens, "
            f"{text_check.evaluation_tokens:,} evaluation tokens with this model's tokenizer."
        )


def _model_name(info: Any) -> str:
    """A readable, stable name for grouping runs of the same model in the history."""
    if info.source == "demo":
        return "SmolLM2-135M-Instruct"
    p = Path(info.path or info.ref)
    name = sources.cached_repo_name(p) or (p.stem if p.suffix == ".gguf" else p.name)
    if name in ("model", ""):
        name = info.architecture
    return f"{name} ({jobs_ui.fmt_params(info.n_params)})"


# --- 4. run --------------------------------------------------------------------------------------------
st.subheader("4. Run")
# several recipes on this model, one shared text: the Sweep page (jobs.sweeps), which reads the demo or a
# path under the models folder (hub downloads land there too)
if source == DEMO or (source in (sources.SOURCES["path"], sources.SOURCES["hub"]) and model_ref):
    st.page_link(
        state.PAGE_SWEEP,
        label="Or sweep several recipes on this model and compare them",
        icon=":material/stacked_line_chart:",
        query_params={"source": "demo"} if source == DEMO else {"source": "path", "path": model_ref or ""},
    )
# the job this page started (its link is in ?job=) or the one the link shows: one run at a time from here
busy = shown_job is not None and shown_job.active
if problems:
    st.caption("Fix first: " + "; ".join(dict.fromkeys(problems)) + ".")
elif busy and shown_job is not None:
    st.caption(
        f"Run is off while job #{shown_job.id} is {shown_job.status.value}; it comes back when the job "
        "ends (or cancel it above)."
    )
if st.button("Run", type="primary", disabled=bool(problems) or busy, key=P + "run"):
    spec = JobSpec(
        model_ref="demo" if info.source == "demo" else str(info.path or info.ref),
        model_name=_model_name(info),
        method=method_id,
        compressor=cid,
        config=config or {},
        calibration={
            **{k: v for k, v in (("calib_path", calib_path), ("eval_path", eval_path)) if v},
            "eval": Path(eval_path or calib_path).name
            if (eval_path or calib_path)
            else "pydoc_data.topics (held-out part)",
            **budget,
        },
        owner=viewer.user,
    )
    try:
        job_id = jobs_ui.backend().submit(spec)
    except CompressionError as exc:
        st.error(f"Not queued: {jobs_ui.plain(exc)}")
    else:
        st.query_params["job"] = jobs_ui.link_id(jobs_ui.backend().status(job_id))
        st.session_state[P + "scroll_to_job"] = True  # the panel is at the top, the button at the bottom
        st.rerun()
