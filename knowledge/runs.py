"""Compression runs in the database: the job queue of "Run it" and the measured evidence it produces.

Lifecycle of a run (issue 7)::

    create_run()            -> queued
    claim_next_run(worker)  -> running   (atomic: two workers never get the same job)
    update_progress(...)    -> stage, fraction, log tail, heartbeat; returns True if a cancel was asked
    finish_run(...)         -> succeeded, and its metrics become measured evidence rows
    fail_run(...) / mark_cancelled(...)
    request_cancel(id)      -> a queued job is cancelled at once; a running one gets cancel_requested
    recover_interrupted()   -> on server start: jobs left 'running' by a dead worker are marked failed

Metrics dictionaries (``before_metrics``/``after_metrics``) are what the evaluation harness returns;
:data:`METRIC_KEYS` lists the keys that become evidence (others are stored but not turned into rows).
Claiming uses a compare-and-set UPDATE (``... WHERE id = ? AND status = 'queued'``), which is atomic
on SQLite and PostgreSQL alike, so the queue needs no backend-specific locking.
"""

from __future__ import annotations

import logging
import math
import os
import platform
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select

from knowledge.db import init_db, session
from knowledge.schema import Evidence, Metric, Source, SourceTag
from knowledge.tables import CompressionRun, EvidenceOrigin, EvidenceRow, RunStatus, utcnow

log = logging.getLogger(__name__)

#: How many log lines a run keeps in ``log_tail``.
LOG_TAIL_LINES = 40

#: metrics key -> (Metric, converter to the metric's unit, what the setting says about it)
METRIC_KEYS: dict[str, tuple[Metric, Callable[[float], float], str]] = {
    "perplexity": (Metric.PERPLEXITY, float, ""),
    "size_mb": (Metric.SIZE_MB, float, "size on disk"),
    "size_bytes": (Metric.SIZE_MB, lambda b: b / 1e6, "size on disk"),
    "bits_per_weight": (Metric.BITS_PER_WEIGHT, float, "compressed layers"),
    "model_bits_per_weight": (Metric.BITS_PER_WEIGHT, float, "whole model"),
    "decode_tokens_per_s": (Metric.TOKENS_PER_S, float, "decode"),
    "prefill_tokens_per_s": (Metric.TOKENS_PER_S, float, "prefill"),
    "peak_memory_bytes": (Metric.MEMORY_GB, lambda b: b / 1e9, "peak memory"),
    "peak_memory_gb": (Metric.MEMORY_GB, float, "peak memory"),
    "params": (Metric.PARAMETERS_B, lambda n: n / 1e9, "parameters"),
    "sparsity": (Metric.SPARSITY, float, "weight sparsity"),
}


@lru_cache(maxsize=1)
def describe_machine() -> str:
    """A short description of this machine for 'measured here on ...' (CPU model, cores, OS)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count() or '?'} cores, {platform.system()}"


# ---------------------------------------------------------------------------------------------------
# Queue


def create_run(
    *,
    model_ref: str,
    model_name: str,
    method: str,
    compressor: str,
    config: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    owner: str | None = None,
    url: str | None = None,
) -> CompressionRun:
    """Queue a run; returns the stored row (with its id)."""
    init_db(url)
    run = CompressionRun(
        model_ref=model_ref,
        model_name=model_name,
        method=method,
        compressor=compressor,
        config=dict(config or {}),
        calibration=calibration,
        owner=owner,
        status=RunStatus.QUEUED.value,
        stage="queued",
    )
    with session(url) as s:
        s.add(run)
        s.flush()
        s.refresh(run)
    log.info("queued run #%s: %s on %s", run.id, method, model_name)
    return run


def get_run(run_id: int, url: str | None = None) -> CompressionRun | None:
    with session(url) as s:
        return s.get(CompressionRun, run_id)


def list_runs(
    *,
    status: RunStatus | str | Iterable[RunStatus | str] | None = None,
    model_name: str | None = None,
    method: str | None = None,
    owner: str | None = None,
    limit: int | None = None,
    newest_first: bool = True,
    url: str | None = None,
) -> list[CompressionRun]:
    """Runs filtered by status (one or several), model, method and owner."""
    init_db(url)
    q = select(CompressionRun)
    if status is not None:
        wanted = [status] if isinstance(status, (str, RunStatus)) else list(status)
        q = q.where(col(CompressionRun.status).in_([RunStatus(s).value for s in wanted]))
    if model_name is not None:
        q = q.where(CompressionRun.model_name == model_name)
    if method is not None:
        q = q.where(CompressionRun.method == method)
    if owner is not None:
        q = q.where(CompressionRun.owner == owner)
    order = col(CompressionRun.id).desc() if newest_first else col(CompressionRun.id).asc()
    q = q.order_by(order)
    if limit is not None:
        q = q.limit(limit)
    with session(url) as s:
        return list(s.exec(q).all())


def count_running(url: str | None = None) -> int:
    return len(list_runs(status=RunStatus.RUNNING, url=url))


def claim_next_run(worker_id: str, url: str | None = None) -> CompressionRun | None:
    """Move the oldest queued run to running for ``worker_id``; None when the queue is empty.

    Safe with several workers: the UPDATE only succeeds while the row is still queued.
    """
    init_db(url)
    for _ in range(20):  # another worker may win a race; try the next candidate
        with session(url) as s:
            candidate = s.exec(
                select(CompressionRun.id)
                .where(CompressionRun.status == RunStatus.QUEUED.value)
                .order_by(col(CompressionRun.id).asc())
                .limit(1)
            ).first()
            if candidate is None:
                return None
            now = utcnow()
            result = s.exec(
                update(CompressionRun)
                .where(
                    col(CompressionRun.id) == candidate, col(CompressionRun.status) == RunStatus.QUEUED.value
                )
                .values(
                    status=RunStatus.RUNNING.value,
                    worker_id=worker_id,
                    started_at=now,
                    heartbeat_at=now,
                    stage="starting",
                    attempts=CompressionRun.attempts + 1,
                )
            )
            if result.rowcount == 1:
                s.commit()
                return s.get(CompressionRun, candidate, populate_existing=True)
    return None


def _append_log(tail: str | None, line: str) -> str:
    lines = (tail.splitlines() if tail else []) + line.splitlines()
    return "\n".join(lines[-LOG_TAIL_LINES:])


def update_progress(
    run_id: int,
    stage: str,
    fraction: float,
    log_line: str | None = None,
    url: str | None = None,
) -> bool:
    """Record progress and a heartbeat; returns True when the user asked to cancel this run."""
    with session(url) as s:
        run = s.get(CompressionRun, run_id)
        if run is None:
            raise KeyError(f"no compression run #{run_id}")
        run.stage = stage[:120]
        run.fraction = max(0.0, min(1.0, float(fraction)))
        run.heartbeat_at = utcnow()
        if log_line:
            run.log_tail = _append_log(run.log_tail, log_line)
        s.add(run)
        return bool(run.cancel_requested)


def heartbeat(run_id: int, url: str | None = None) -> bool:
    """Touch the heartbeat only; returns True when a cancel was requested."""
    with session(url) as s:
        run = s.get(CompressionRun, run_id)
        if run is None:
            raise KeyError(f"no compression run #{run_id}")
        run.heartbeat_at = utcnow()
        s.add(run)
        return bool(run.cancel_requested)


def request_cancel(run_id: int, url: str | None = None) -> RunStatus:
    """Cancel a queued run at once, or ask the worker of a running one to stop; returns the new status."""
    with session(url) as s:
        run = s.get(CompressionRun, run_id)
        if run is None:
            raise KeyError(f"no compression run #{run_id}")
        status = RunStatus(run.status)
        if status is RunStatus.QUEUED:
            run.status, run.finished_at, run.stage = RunStatus.CANCELLED.value, utcnow(), "cancelled"
            run.error = "cancelled before it started"
        elif status is RunStatus.RUNNING:
            run.cancel_requested = True
        s.add(run)
        return RunStatus(run.status)


def _finish(run_id: int, status: RunStatus, url: str | None, **values: Any) -> CompressionRun:
    with session(url) as s:
        run = s.get(CompressionRun, run_id)
        if run is None:
            raise KeyError(f"no compression run #{run_id}")
        run.status = status.value
        run.finished_at = utcnow()
        run.stage = status.value
        for key, value in values.items():
            if value is not None:
                setattr(run, key, value)
        s.add(run)
        return run


def finish_run(
    run_id: int,
    *,
    before_metrics: dict[str, Any],
    after_metrics: dict[str, Any],
    artifacts: dict[str, str] | None = None,
    samples: dict[str, Any] | None = None,
    timings: dict[str, float] | None = None,
    machine: str | None = None,
    record_evidence: bool = True,
    url: str | None = None,
) -> CompressionRun:
    """Mark a run succeeded with its results and (by default) store its metrics as measured evidence.

    Non-finite numbers (a diverged perplexity) are stored as null: JSON has no inf/NaN and PostgreSQL's
    JSONB refuses them. A problem while deriving evidence is logged and does not undo the success.
    """
    run = _finish(
        run_id,
        RunStatus.SUCCEEDED,
        url,
        before_metrics=_finite(before_metrics),
        after_metrics=_finite(after_metrics),
        artifacts=artifacts,
        samples=_finite(samples),
        timings=_finite(timings),
        machine=machine or describe_machine(),
        fraction=1.0,
    )
    if record_evidence:
        try:
            record_measured_evidence(run_id, url=url)
        except Exception:
            log.exception("run #%s succeeded but its metrics could not be stored as evidence", run_id)
    return run


def _finite(value: Any) -> Any:
    """A copy of a JSON-like value with inf/NaN floats replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def fail_run(run_id: int, error: str, url: str | None = None) -> CompressionRun:
    return _finish(run_id, RunStatus.FAILED, url, error=error)


def mark_cancelled(
    run_id: int, url: str | None = None, reason: str = "cancelled by the user"
) -> CompressionRun:
    return _finish(run_id, RunStatus.CANCELLED, url, error=reason)


def recover_interrupted(
    *,
    stale_after_s: float | None = None,
    reason: str = "the server restarted while this job was running",
    url: str | None = None,
) -> list[int]:
    """Mark runs stuck in 'running' as failed; returns their ids.

    With ``stale_after_s=None`` every running job is taken as interrupted (call it once at server start,
    before any worker runs); otherwise only jobs whose heartbeat is older than that.
    """
    init_db(url)
    now = utcnow()
    failed = []
    with session(url) as s:
        for run in s.exec(
            select(CompressionRun).where(CompressionRun.status == RunStatus.RUNNING.value)
        ).all():
            if stale_after_s is not None and run.heartbeat_at is not None:
                beat = (
                    run.heartbeat_at
                    if run.heartbeat_at.tzinfo
                    else run.heartbeat_at.replace(tzinfo=now.tzinfo)
                )
                if now - beat < timedelta(seconds=stale_after_s):
                    continue
            run.status, run.finished_at, run.stage = RunStatus.FAILED.value, now, "failed"
            run.error = reason
            s.add(run)
            failed.append(int(run.id))
    if failed:
        log.warning("marked interrupted runs as failed: %s", failed)
    return failed


def delete_run(run_id: int, url: str | None = None) -> None:
    """Delete a run and the evidence it produced."""
    with session(url) as s:
        for row in s.exec(select(EvidenceRow).where(EvidenceRow.run_id == run_id)).all():
            s.delete(row)
        run = s.get(CompressionRun, run_id)
        if run is not None:
            s.delete(run)
    _clear_catalog_cache()


# ---------------------------------------------------------------------------------------------------
# Runs as evidence


def _setting_text(run: CompressionRun) -> str:
    config = ", ".join(f"{k}={v}" for k, v in sorted((run.config or {}).items()))
    return f"{run.compressor}" + (f" ({config})" if config else "")


def evidence_from_run(run: CompressionRun) -> list[Evidence]:
    """The measured evidence rows of a succeeded run: one per metric present before and after."""
    if RunStatus(run.status) is not RunStatus.SUCCEEDED:
        raise ValueError(f"run #{run.id} is {run.status}; only succeeded runs are evidence")
    before, after = run.before_metrics or {}, run.after_metrics or {}
    machine = run.machine or describe_machine()
    dataset = None
    if isinstance(run.calibration, dict):
        dataset = run.calibration.get("eval") or run.calibration.get("dataset")
    rows: list[Evidence] = []
    seen: set[tuple[Metric, str]] = set()
    for key, (metric, convert, what) in METRIC_KEYS.items():
        if after.get(key) is None:
            continue
        setting = _setting_text(run) + (f"; {what}" if what else "")
        if (metric, setting) in seen:  # size_mb and size_bytes both present: keep the first
            continue
        seen.add((metric, setting))
        try:
            value = convert(float(after[key]))
            baseline = convert(float(before[key])) if before.get(key) is not None else None
        except (TypeError, ValueError):
            log.warning("run #%s: metric %r is not a number (%r); skipped", run.id, key, after.get(key))
            continue
        if not math.isfinite(value) or (baseline is not None and not math.isfinite(baseline)):
            log.warning("run #%s: metric %r is not finite; no evidence row", run.id, key)
            continue
        rows.append(
            Evidence(
                method=run.method,
                model=run.model_name,
                setting=setting,
                metric=metric,
                dataset=str(dataset) if dataset else None,
                value=value,
                baseline=baseline,
                baseline_label="same model before compression" if baseline is not None else None,
                source=Source(
                    paper=f"Shrinkwise run #{run.id}",
                    locator=f"measured here on {machine}",
                    tag=SourceTag.MEASURED,
                ),
                note=f"run finished {run.finished_at:%Y-%m-%d %H:%M} UTC"
                if isinstance(run.finished_at, datetime)
                else None,
            )
        )
    return rows


def record_measured_evidence(run_id: int, url: str | None = None) -> int:
    """Store (or re-store) the evidence rows of a succeeded run; returns how many."""
    with session(url) as s:
        run = s.get(CompressionRun, run_id)
        if run is None:
            raise KeyError(f"no compression run #{run_id}")
        rows = evidence_from_run(run)
        for old in s.exec(select(EvidenceRow).where(EvidenceRow.run_id == run_id)).all():
            s.delete(old)
        for ev in rows:
            s.add(
                EvidenceRow(
                    method=ev.method,
                    model=ev.model,
                    metric=ev.metric.value,
                    measured=True,
                    origin=EvidenceOrigin.RUN.value,
                    run_id=run_id,
                    data=ev.model_dump(mode="json"),
                )
            )
    _clear_catalog_cache()
    return len(rows)


def measured_evidence(
    method: str | None = None, model: str | None = None, url: str | None = None
) -> list[Evidence]:
    """Evidence added by runs (not the data files), oldest first."""
    init_db(url)
    q = select(EvidenceRow).where(EvidenceRow.origin == EvidenceOrigin.RUN.value)
    if method is not None:
        q = q.where(EvidenceRow.method == method)
    if model is not None:
        q = q.where(EvidenceRow.model == model)
    with session(url) as s:
        return [Evidence.model_validate(r.data) for r in s.exec(q.order_by(col(EvidenceRow.id).asc())).all()]


def _clear_catalog_cache() -> None:
    from knowledge.catalog import clear_cache

    clear_cache()
