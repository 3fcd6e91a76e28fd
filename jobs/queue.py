"""The job queue: compression runs as database rows, moved through their states by compare-and-set.

Lifecycle of a run (issue 7)::

    create_run()            -> queued
    claim_next_run(worker)  -> running   (atomic: two workers never get the same job)
    update_progress(...)    -> stage, fraction, log tail, heartbeat; returns True if a cancel was asked
    finish_run(...)         -> succeeded, and its metrics become measured evidence rows (knowledge.runs)
    fail_run(...) / mark_cancelled(...)
    request_cancel(id)      -> a queued job is cancelled at once; a running one gets cancel_requested
    recover_interrupted()   -> jobs left 'running' by a dead worker are marked failed

Claiming uses a compare-and-set UPDATE (``... WHERE id = ? AND status = 'queued'``), which is atomic
on SQLite and PostgreSQL alike, so the queue needs no backend-specific locking. Every job backend
(:mod:`jobs.backend`) keeps its jobs here, so the pages read one table whatever ran the job.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, update
from sqlmodel import col, select

from knowledge import runs as evidence
from knowledge.db import init_db, session
from knowledge.ids import MethodId
from knowledge.metrics import RunMetrics
from knowledge.tables import CompressionRun, RunStatus, utcnow

if TYPE_CHECKING:
    from jobs.backend import JobSpec

log = logging.getLogger(__name__)

#: How many log lines a run keeps in ``log_tail``.
LOG_TAIL_LINES = 40


# ---------------------------------------------------------------------------------------------------
# Queue


def enqueue(spec: JobSpec, url: str | None = None) -> CompressionRun:
    """Validate a job and queue it; returns the stored row. The one path from a :class:`JobSpec` to a
    row: every backend calls it with the whole spec, so a field added to the spec is stored by all.

    Raises ``CompressionError``/``ConfigError`` (see :meth:`JobSpec.validate`) before anything is stored.
    """
    config = spec.validate()
    return create_run(
        model_ref=spec.model_ref,
        model_name=spec.model_name or spec.model_ref,
        method=spec.method,
        compressor=spec.compressor,
        config=config,
        calibration=dict(spec.calibration or {}),
        owner=spec.owner,
        sweep_id=spec.sweep_id,
        recipe=spec.recipe,
        url=url,
    )


def create_run(
    *,
    model_ref: str,
    model_name: str,
    method: MethodId,
    compressor: str,
    config: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    owner: str | None = None,
    sweep_id: int | None = None,
    recipe: str | None = None,
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
        sweep_id=sweep_id,
        recipe=recipe,
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


def get_run_by_public_id(public_id: str, url: str | None = None) -> CompressionRun | None:
    """The run a link names (``?run=<public_id>``); None when no run has that id."""
    if not public_id:
        return None
    init_db(url)
    with session(url) as s:
        found: CompressionRun | None = s.exec(
            select(CompressionRun).where(CompressionRun.public_id == public_id)
        ).first()
        return found


def ensure_public_id(run_id: int, url: str | None = None) -> str | None:
    """The run's public id, giving one to a run stored before public ids existed; None for no such run."""
    from knowledge.tables import new_public_id

    with session(url) as s:
        run = s.get(CompressionRun, run_id)
        if run is None:
            return None
        if not run.public_id:
            run.public_id = new_public_id()
            s.add(run)
        return run.public_id


def list_runs(
    *,
    status: RunStatus | str | Iterable[RunStatus | str] | None = None,
    model_name: str | None = None,
    method: str | None = None,
    owner: str | None = None,
    limit: int | None = None,
    newest_first: bool = True,
    sweep_id: int | None = None,
    url: str | None = None,
) -> list[CompressionRun]:
    """Runs filtered by status (one or several), model, method, owner and sweep."""
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
    if sweep_id is not None:
        q = q.where(CompressionRun.sweep_id == sweep_id)
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
                .where(  # a job queued for a Ray task (jobs.ray_backend) is that task's to claim
                    or_(
                        col(CompressionRun.worker_id).is_(None),
                        col(CompressionRun.worker_id).not_like(RAY_WORKER_PREFIX + "%"),
                    )
                )
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


#: ``worker_id`` of a job sent to a Ray task: ``ray:<task id>``, set while it is queued in the cluster.
RAY_WORKER_PREFIX = "ray:"


def reserve_run(run_id: int, worker_id: str, url: str | None = None) -> bool:
    """Name the worker that will run a still ``queued`` job (a Ray task waiting in the cluster), so the
    local pool's :func:`claim_next_run` leaves it to that worker; False when the job is no longer queued."""
    with session(url) as s:
        result = s.exec(
            update(CompressionRun)
            .where(col(CompressionRun.id) == run_id, col(CompressionRun.status) == RunStatus.QUEUED.value)
            .values(worker_id=worker_id)
        )
        return bool(result.rowcount == 1)


def claim_run(run_id: int, worker_id: str, url: str | None = None) -> CompressionRun | None:
    """Move one given job ``queued -> running`` for ``worker_id`` (compare-and-set, like
    :func:`claim_next_run`); None when it is not queued any more (cancelled, or another worker has it)."""
    init_db(url)
    now = utcnow()
    with session(url) as s:
        result = s.exec(
            update(CompressionRun)
            .where(col(CompressionRun.id) == run_id, col(CompressionRun.status) == RunStatus.QUEUED.value)
            .values(
                status=RunStatus.RUNNING.value,
                worker_id=worker_id,
                started_at=now,
                heartbeat_at=now,
                stage="starting",
                attempts=CompressionRun.attempts + 1,
            )
        )
        if result.rowcount != 1:
            return None
        s.commit()
        return s.get(CompressionRun, run_id, populate_existing=True)


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


def request_cancel(run_id: int, url: str | None = None, stale_after_s: float | None = None) -> RunStatus:
    """Cancel a queued run at once, or ask the worker of a running one to stop; returns the new status.

    A running job whose worker is gone (dead process on this host, or no heartbeat for ``stale_after_s``,
    default :data:`STALE_AFTER_S`) has nobody to stop it: it is cancelled at once instead of waiting
    for a worker that will never answer.
    """
    stale_after_s = STALE_AFTER_S if stale_after_s is None else stale_after_s
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
            if _interrupted(run, utcnow(), stale_after_s):  # nobody is left to stop it: done now
                run.status, run.finished_at, run.stage = RunStatus.CANCELLED.value, utcnow(), "cancelled"
                run.error = ORPHAN_CANCEL_REASON
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
    before_metrics: RunMetrics | dict[str, Any],
    after_metrics: RunMetrics | dict[str, Any],
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
        before_metrics=_finite(_metrics_json(before_metrics)),
        after_metrics=_finite(_metrics_json(after_metrics)),
        artifacts=artifacts,
        samples=_finite(samples),
        timings=_finite(timings),
        machine=machine or evidence.describe_machine(),
        fraction=1.0,
    )
    if record_evidence:
        try:
            evidence.record_measured_evidence(run_id, url=url)
        except Exception:
            log.exception("run #%s succeeded but its metrics could not be stored as evidence", run_id)
    return run


def _metrics_json(metrics: RunMetrics | dict[str, Any]) -> dict[str, Any]:
    """A metrics column's JSON: a :class:`RunMetrics` as it stores itself, a dict as given."""
    return metrics.to_json() if isinstance(metrics, RunMetrics) else dict(metrics)


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


#: Why a job left ``running`` by a worker that is gone is failed (the user can queue it again).
RESTART_REASON = "the server restarted while this job ran (its worker process stopped); queue it again"
#: How a cancelled job whose worker was already gone ends.
ORPHAN_CANCEL_REASON = "cancelled by the user (its worker process had already stopped)"
#: A running job whose heartbeat is older than this is taken as abandoned (its worker died).
STALE_AFTER_S = 60.0


def parse_worker_id(worker_id: str | None) -> tuple[str, int] | None:
    """``host:pid:token`` (what the local pool claims with) -> (host, pid); None for other ids."""
    if not worker_id:
        return None
    parts = worker_id.split(":")
    if len(parts) < 3:
        return None
    try:
        return parts[0], int(parts[1])
    except ValueError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def worker_gone(worker_id: str | None) -> bool:
    """True when the worker that claimed a job is known to be dead: its process on this host is gone.

    A worker on another host (or one whose id says nothing) cannot be checked here; its heartbeat can.
    """
    owner = parse_worker_id(worker_id)
    return owner is not None and owner[0] == socket.gethostname() and not _pid_alive(owner[1])


def recover_interrupted(
    *,
    stale_after_s: float | None = None,
    keep: Iterable[int] = (),
    reason: str = RESTART_REASON,
    url: str | None = None,
) -> list[int]:
    """Fail the jobs left ``running`` by a worker that is gone; returns their ids. Queued jobs stay.

    A job whose cancel was requested ends ``cancelled`` instead (its worker can no longer confirm it).

    The one recovery of the job system: a pool calls it on start and now and then while it runs, a
    backend's ``recover`` calls it. With ``stale_after_s=None`` every running job is taken as interrupted
    (once at server start, before any worker runs); otherwise a job is interrupted when its worker process
    on this host is dead, or its heartbeat is missing or older than ``stale_after_s`` (another machine's
    pool died). ``keep``: jobs the caller is running itself, never touched.
    """
    init_db(url)
    now = utcnow()
    mine = set(keep)
    failed = []
    with session(url) as s:
        for run in s.exec(
            select(CompressionRun).where(CompressionRun.status == RunStatus.RUNNING.value)
        ).all():
            if run.id in mine or not _interrupted(run, now, stale_after_s):
                continue
            if run.cancel_requested:  # the user asked to stop it, and it has stopped: that is a cancel
                run.status, run.stage, run.error = (
                    RunStatus.CANCELLED.value,
                    "cancelled",
                    ORPHAN_CANCEL_REASON,
                )
            else:
                run.status, run.stage, run.error = RunStatus.FAILED.value, "failed", reason
            run.finished_at = now
            s.add(run)
            failed.append(run.stored_id)
    if failed:
        log.warning("jobs %s were running when their worker stopped; marked failed (or cancelled)", failed)
    return failed


def _interrupted(run: CompressionRun, now: datetime, stale_after_s: float | None) -> bool:
    """True when nobody runs this ``running`` job any more: its worker on this host is dead, or its
    heartbeat is missing or older than ``stale_after_s`` (None: every running job counts as interrupted)."""
    if stale_after_s is None or worker_gone(run.worker_id):
        return True
    beat = run.heartbeat_at
    if beat is not None and beat.tzinfo is None:
        beat = beat.replace(tzinfo=now.tzinfo)
    return beat is None or now - beat >= timedelta(seconds=stale_after_s)


def delete_run(run_id: int, url: str | None = None) -> None:
    """Delete a run and the evidence it produced."""
    with session(url) as s:
        evidence.delete_evidence_of(s, run_id)
        run = s.get(CompressionRun, run_id)
        if run is not None:
            s.delete(run)
    evidence.clear_catalog_cache()
