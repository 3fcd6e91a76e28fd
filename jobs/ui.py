"""Streamlit pieces shared by the "Run it" pages (Compress, Run result, History): the job backend, the
live job panel, the before/after table. Layout and formatting only; the work is in the rest of :mod:`jobs`.

This is the one module of ``jobs`` that imports Streamlit: only the app imports it, so the queue and the
worker stay importable on a machine without it.

Page files and URL parameters (a link from another page opens a pre-filled form)::

    st.switch_page(PAGE_COMPRESS, query_params={"method": "gptq", "bits": "4", "group_size": "128"})
    st.page_link(PAGE_RESULT, query_params={"run": info.public_id})   # never the sequential id

Every function that shows runs takes the :class:`jobs.access.Viewer` (``app.auth.viewer()``) and shows
only the runs that viewer may see; a run it may not see gets the same answer as one that does not exist.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any

import streamlit as st

from jobs.access import Viewer
from jobs.backend import JobBackend, JobInfo, get_backend, reconcile
from knowledge.tables import RunStatus

PAGE_COMPRESS = "views/compress.py"
PAGE_RESULT = "views/run_result.py"
PAGE_HISTORY = "views/history.py"
PAGE_SWEEP = "views/sweep.py"

#: Set to 0 to keep the app from starting a worker pool (tests drive the worker themselves).
ENV_AUTOSTART = "SHRINKWISE_JOBS_AUTOSTART"

STATUS_BADGE = {
    RunStatus.QUEUED: ":gray-badge[queued]",
    RunStatus.RUNNING: ":blue-badge[running]",
    RunStatus.SUCCEEDED: ":green-badge[succeeded]",
    RunStatus.FAILED: ":red-badge[failed]",
    RunStatus.CANCELLED: ":orange-badge[cancelled]",
}


def autostart() -> bool:
    return os.environ.get(ENV_AUTOSTART, "1").strip().lower() not in ("0", "false", "no", "off")


def backend() -> JobBackend:
    """The job backend (cheap to build; the database engine behind it is cached by knowledge.db)."""
    return get_backend(autostart=autostart())


#: A page reconciles the jobs at most this often per server process (the live panel asks every second).
RECONCILE_EVERY_S = 5.0
_last_reconcile = [0.0]


def ensure_worker_for_queue(force: bool = True) -> None:
    """Every page visit: end the ``running`` jobs whose worker is gone (even when nothing is queued),
    delete expired uploads and outputs, and start the worker pool when jobs wait and none runs (e.g.
    after a server restart). ``force=False`` skips it when it ran less than ``RECONCILE_EVERY_S`` ago."""
    now = time.monotonic()
    if not force and now - _last_reconcile[0] < RECONCILE_EVERY_S:
        return
    _last_reconcile[0] = now
    reconcile(backend(), start_worker=autostart())


def plain(text: object) -> str:
    """``text`` for ``st.markdown`` (and labels) shown exactly as written: every character Markdown,
    Streamlit's directives (``:red[…]``, ``:material/…:``) or LaTeX (``$``) would read is escaped, so
    a folder named ``[Session expired - click here](https://…)`` stays text, never a link."""
    return _MD_SPECIAL.sub(r"\\\g<0>", str(text)).replace("\n", " ")


_MD_SPECIAL = re.compile(r"[\\`*_{}\[\]()<>#+\-.!|~:$&=\"']")


# ---------------------------------------------------------------------------------------------------
# reading a model for the Compress page


def model_stamp(ref: str) -> float:
    """Changes whenever the model at ``ref`` does: the newest modification time of the path and of the
    files directly in it (a fixed ``config.json`` changes it, although the folder's own time does not)."""
    stamps = [0.0]
    try:
        stamps.append(os.stat(ref).st_mtime)
        if os.path.isdir(ref):
            with os.scandir(ref) as entries:
                stamps.extend(e.stat().st_mtime for e in entries)
    except OSError:
        pass
    return max(stamps)


@st.cache_data(show_spinner="Reading the model's config…", max_entries=32, ttl=600)
def _check_model_cached(ref: str, stamp: float) -> Any:
    """Only successes are cached (Streamlit never caches an exception), keyed on the model's stamp, and
    for ten minutes at most: a refused model is read again on the next visit, once it has been fixed."""
    from jobs import preflight

    return preflight.check_model(ref)


def check_model(ref: str) -> Any:
    """:func:`jobs.preflight.check_model` for the page (cached while the files stay the same); raises."""
    return _check_model_cached(ref, model_stamp(ref))


def inspect_model(ref: str) -> tuple[Any, str | None]:
    """``(ModelInfo, None)``, or ``(None, why the model cannot be used)``; never raises."""
    from compressors.base import CompressionError

    try:
        return check_model(ref), None
    except CompressionError as exc:
        return None, str(exc)
    except Exception as exc:  # an unexpected reader error: show it, never crash the page
        return None, f"cannot read this model: {type(exc).__name__}: {exc}"


def find_run(ref: str | None, viewer: Viewer) -> JobInfo | None:
    """The run a link names (``?run=`` / ``?job=``: its public id) if this viewer may open it, else None.

    An admin (the local user included) may also give the sequential number, as old links did. A run that
    exists but belongs to someone else gives None, exactly like one that does not exist.
    """
    ref = (ref or "").strip()
    if not ref:
        return None
    r = backend()
    try:
        info = r.status(int(ref)) if ref.isdigit() and viewer.is_admin else r.find(ref)
    except KeyError:
        return None
    return info if viewer.can_see(info.owner) else None


def link_id(info: JobInfo) -> str:
    """What links to this run carry: its public id (every stored run has one once listed)."""
    return info.public_id or str(info.id)


# ---------------------------------------------------------------------------------------------------
# formatting


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def fmt_params(n: float | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M" if n >= 1e6 else f"{int(n):,}"


TIMING_LABELS = {
    "load": "load the model",
    "measure before": "measure before",
    "compress": "compress",
    "save": "save packed",
    "measure after": "measure after (reloaded)",
    "export": "export",
    "total": "all stages",
    "job_total_s": "job process (with start-up)",
}


def stage_estimate_text(stages: dict[str, float]) -> str:
    """The pre-run estimate by stage in one line, e.g. "load 2.0 s · measure before reused · ... ·
    export 0.5 s" (a phone shows a line; a table would be cut)."""
    parts = []
    for k, v in stages.items():
        if k == "total":
            continue
        reused = k == "measure before" and not v
        parts.append(f"{TIMING_LABELS.get(k, k)} {'0 s (reused or skipped)' if reused else fmt_seconds(v)}")
    return " · ".join(parts)


def timing_rows(
    timings: dict[str, float], elapsed_s: float | None, estimate: dict[str, float] | None = None
) -> list[dict[str, str]]:
    """Rows of the timings table: each stage's time and, when the run recorded its pre-run estimate by
    stage, that estimate beside it (the row of every stage estimated, even one the run did not time)."""
    est = estimate or {}
    keys = list(timings) + [k for k in est if k not in timings]
    rows = []
    for k in keys:
        row = {"stage": TIMING_LABELS.get(k, k)}
        if est:
            row["estimated"] = fmt_seconds(est.get(k))
        row["took"] = fmt_seconds(timings.get(k))
        rows.append(row)
    if elapsed_s is not None:
        rows.append(
            {
                "stage": "from start to result",
                **({"estimated": "–"} if est else {}),
                "took": fmt_seconds(elapsed_s),
            }
        )
    return rows


def table_height(n_rows: int) -> int:
    """Pixels for a dataframe that shows ``n_rows`` without scrolling."""
    return 38 + 35 * n_rows


def settings_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def job_title(info: JobInfo) -> str:
    """The job's title as Markdown: the model's name (an upload's folder name, chosen by a user) is
    escaped so it is shown as written."""
    return f"Job #{info.id}: {plain(info.compressor)} on {plain(info.model_name)}"


# ---------------------------------------------------------------------------------------------------
# the job panel


def scroll_to(anchor_id: str) -> None:
    """Scroll the page to the element with ``anchor_id`` once (after Run, the job panel at the top of the
    page is what changed; the button the user pressed is at the bottom). A zero-height component runs
    the script in an iframe of the same origin, which may reach the page around it."""
    import json

    from streamlit.components.v1 import html

    target = json.dumps(anchor_id)
    html(
        "<script>const el = window.parent.document.getElementById("
        + target
        + '); if (el) { el.scrollIntoView({behavior: "smooth", block: "start"}); }</script>',
        height=0,
    )


def job_panel(ref: str, viewer: Viewer, *, key: str = "job") -> JobInfo | None:
    """The state of the job ``ref`` names (see :func:`find_run`); while it is queued or running it
    refreshes itself every second."""
    info = find_run(ref, viewer)
    if info is None:
        st.warning("There is no such job that you can open. It may have been deleted; see the History page.")
        return None
    job_id = info.id
    if info.active:
        ensure_worker_for_queue()
        info = backend().status(job_id)
    if info.active:
        _live_panel(job_id, key)
    else:
        _render(info, key)
    return info


@st.fragment(run_every=1.0)
def _live_panel(job_id: int, key: str) -> None:
    ensure_worker_for_queue(force=False)  # a worker that dies while the page watches: the job ends
    info = backend().status(job_id)
    _render(info, key)
    if info.finished:
        st.rerun()  # the job ended: redraw the whole page without the timer


def render_job(info: JobInfo, key: str) -> None:
    """One job's panel without its own refresh timer (a sweep's page refreshes all its children at once)."""
    _render(info, key)


def model_name(info: Any) -> str:
    """A readable, stable name for grouping runs of the same model (``compressors.models.ModelInfo``)."""
    from pathlib import Path

    if info.source == "demo":
        return "SmolLM2-135M-Instruct"
    p = Path(info.path or info.ref)
    name = p.stem if p.suffix == ".gguf" else p.name
    if name in ("model", ""):
        name = info.architecture
    return f"{name} ({fmt_params(info.n_params)})"


def _render(info: JobInfo, key: str) -> None:
    with st.container(border=True):
        st.markdown(f"**{job_title(info)}** {STATUS_BADGE[info.status]}")
        st.caption(f"{settings_text(info.config)}")
        if info.status is RunStatus.QUEUED:
            ahead = [
                j for j in backend().list(status=[RunStatus.QUEUED, RunStatus.RUNNING]) if j.id < info.id
            ]
            st.progress(
                0.0,
                text=f"Queued: {len(ahead)} job(s) ahead" if ahead else "Queued: the worker is starting it",
            )
        elif info.status is RunStatus.RUNNING:
            stage = info.stage or "starting"
            st.progress(min(1.0, max(0.0, info.fraction)), text=f"{stage} · {100 * info.fraction:.0f}%")
            st.caption(
                f"Elapsed {fmt_seconds(info.elapsed_s)}" + (" · stopping…" if info.cancel_requested else "")
            )
        if info.active:
            if st.button(
                "Cancel",
                key=f"{key}_cancel_{info.id}",
                disabled=info.cancel_requested,
                help="Stops the job within seconds; the uploaded model is kept.",
            ):
                backend().cancel(info.id)
                st.rerun(scope="fragment")
        elif info.status is RunStatus.SUCCEEDED:
            b, a = info.before_metrics, info.after_metrics
            if b.get("perplexity") and a.get("perplexity"):
                st.success(
                    f"Done in {fmt_seconds(info.elapsed_s)}: perplexity {b['perplexity']:.2f} → "
                    f"{a['perplexity']:.2f}, size {fmt_bytes(b.get('size_bytes'))} → "
                    f"{fmt_bytes(a.get('size_bytes'))}."
                )
            else:
                st.success(f"Done in {fmt_seconds(info.elapsed_s)}.")
            st.page_link(
                PAGE_RESULT,
                label="Open the result",
                icon=":material/analytics:",
                query_params={"run": link_id(info)},
            )
        elif info.status is RunStatus.FAILED:
            st.error(f"The job failed: {plain(info.error)}")
            if _is_upload(info.model_ref):
                st.caption(
                    f"Your uploaded model is kept at {plain(info.model_ref)}; fix the problem and run it again."
                )
        elif info.status is RunStatus.CANCELLED:
            st.info(f"The job was {plain(info.error or 'cancelled by the user')}.")
        if info.log_tail:
            with st.expander("Log", expanded=info.active or info.status is RunStatus.FAILED):
                st.code("\n".join(info.log_tail.splitlines()[-15:]), language=None)


def _is_upload(model_ref: str) -> bool:
    return "/uploads/" in model_ref.replace("\\", "/")


def active_jobs(viewer: Viewer, exclude: int | None = None) -> list[JobInfo]:
    """The viewer's queued and running jobs (every tab; every user's for an admin), with links to follow them."""
    ensure_worker_for_queue()  # e.g. after a server restart: queued jobs continue, orphans end
    jobs = [
        j
        for j in backend().list(status=[RunStatus.QUEUED, RunStatus.RUNNING], owner=viewer.owner_filter)
        if j.id != exclude
    ]
    if jobs:
        with st.expander(f"Active jobs ({len(jobs)})", expanded=False):
            for j in jobs:
                st.page_link(
                    PAGE_COMPRESS,
                    label=f"#{j.id} {plain(j.compressor)} on {plain(j.model_name)}: {j.status.value}"
                    + (f", {100 * j.fraction:.0f}%" if j.status is RunStatus.RUNNING else ""),
                    query_params={"job": link_id(j)},
                )
    return jobs


# ---------------------------------------------------------------------------------------------------
# results


# (label, metric key, how to show a value, lower is better)
COMPARISON: list[tuple[str, str, Callable[[Any], str], bool]] = [
    ("Perplexity (held-out)", "perplexity", lambda v: f"{v:.3f}", True),
    ("Size on disk", "size_bytes", fmt_bytes, True),
    ("Bits per weight, compressed layers", "bits_per_weight", lambda v: f"{v:.3f}", True),
    ("Bits per weight, whole model", "model_bits_per_weight", lambda v: f"{v:.3f}", True),
    ("Parameters", "params", fmt_params, True),
    ("Sparsity of linear layers", "sparsity", lambda v: f"{100 * v:.1f}%", False),
    ("Prefill tokens/s", "prefill_tokens_per_s", lambda v: f"{v:.1f}", False),
    ("Decode tokens/s", "decode_tokens_per_s", lambda v: f"{v:.2f}", False),
    ("Peak memory while measuring", "peak_memory_bytes", fmt_bytes, True),
    ("Model tensors in memory", "model_memory_bytes", fmt_bytes, True),
]


def size_growth_warning(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    """A sentence when the compressed checkpoint is larger on disk than its input (None otherwise).

    It happens when the input was itself quantized (a GGUF) and the tensors left unquantized are stored
    wider than they were there; the page says so instead of showing a bigger number without a word.
    """
    b, a = before.get("size_bytes"), after.get("size_bytes")
    if not (isinstance(b, (int, float)) and isinstance(a, (int, float)) and b and a > b):
        return None
    return (
        f"The compressed checkpoint ({fmt_bytes(a)}) is larger than its input ({fmt_bytes(b)}). The layers "
        "that were not quantized (embeddings, norms, the output layer) are stored in 16 or 32 bits, while "
        "the input held them in fewer bits (a GGUF is quantized throughout). Store them in bfloat16 "
        "(`--dense-dtype bfloat16`, the default for a GGUF input) or compress from the original 16-bit "
        "checkpoint."
    )


# figures that are shares of a whole: their change is shown in percentage points
SHARE_KEYS = frozenset({"sparsity"})


def _number(value: Any) -> float | None:
    """``value`` as a positive figure, or None (missing, zero, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return float(value)


def _ratio_words(ratio: float, up: str, down: str, same: str) -> str:
    if f"{ratio:.1f}" == "1.0" and f"{1 / ratio:.1f}" == "1.0":
        return same
    return f"{ratio:.1f}× {up}" if ratio >= 1 else f"{1 / ratio:.1f}× {down}"


def method_label(name: str, config: dict[str, Any]) -> str:
    """The method as the verdict names it: "4-bit GPTQ" when the settings say how many bits, else the name."""
    bits = config.get("bits")
    if isinstance(bits, str) and bits.isdigit():
        bits = int(bits)
    return f"{bits}-bit {name}" if isinstance(bits, int) and not isinstance(bits, bool) else name


def verdict(label: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    """One line saying what the run did, e.g. "4-bit GPTQ: 3.1× smaller, perplexity +8.2%, decode 1.7×
    faster on this machine": the size ratio on disk, the change in held-out perplexity and the ratio of
    decode speeds; a part whose figure is missing before or after is left out."""
    parts = []
    b, a = _number(before.get("size_bytes")), _number(after.get("size_bytes"))
    if b is not None and a is not None:
        parts.append(_ratio_words(b / a, "smaller", "larger", "the same size"))
    b, a = _number(before.get("perplexity")), _number(after.get("perplexity"))
    if b is not None and a is not None:
        parts.append(f"perplexity {100 * (a - b) / b:+.1f}%")
    b, a = _number(before.get("decode_tokens_per_s")), _number(after.get("decode_tokens_per_s"))
    if b is not None and a is not None:
        parts.append("decode " + _ratio_words(a / b, "faster", "slower", "as fast") + " on this machine")
    return f"{label}: " + (", ".join(parts) if parts else "no before/after figures to compare")


GOOD, BAD = "good", "bad"


def comparison_tones(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """For each row of :func:`comparison_rows`, whether its change is ``GOOD``, ``BAD`` or neither ("")
    by the figure's lower-is-better flag in ``COMPARISON``; a change too small to show is neither."""
    tones = []
    for _, key, _, lower_is_better in COMPARISON:
        b, a = before.get(key), after.get(key)
        if b is None and a is None:
            continue
        tone = ""
        if isinstance(b, (int, float)) and isinstance(a, (int, float)) and (b or key in SHARE_KEYS):
            step = (a - b) if key in SHARE_KEYS else (a - b) / b
            if abs(step) >= 0.0005:
                tone = GOOD if (step < 0) == lower_is_better else BAD
        tones.append(tone)
    if after.get("compress_peak_rss_bytes"):
        tones.append("")
    return tones


def comparison_rows(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, str]]:
    """Rows of the before/after table; the change column is relative (``+3.1%``), except for shares
    (sparsity), whose change is in percentage points: 0.0% -> 14.8% is "+14.8 pts", not "+46728%"."""
    rows = []
    for label, key, fmt, _ in COMPARISON:
        b, a = before.get(key), after.get(key)
        if b is None and a is None:
            continue
        change = ""
        if key in SHARE_KEYS:
            if isinstance(b, (int, float)) and isinstance(a, (int, float)):
                change = f"{100 * (a - b):+.1f} pts"
        elif isinstance(b, (int, float)) and isinstance(a, (int, float)) and b:
            change = f"{100 * (a - b) / b:+.1f}%"
        rows.append(
            {
                "figure": label,
                "before": "–" if b is None else fmt(b),
                "after": "–" if a is None else fmt(a),
                "change": change,
            }
        )
    if after.get("compress_peak_rss_bytes"):
        rows.append(
            {
                "figure": "Peak memory while compressing",
                "before": "–",
                "after": fmt_bytes(after["compress_peak_rss_bytes"]),
                "change": "",
            }
        )
    return rows
