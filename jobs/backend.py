"""The job backend interface the web app calls, its local implementation, and the factory that picks one.

:class:`JobBackend` is a ``Protocol`` (``submit``, ``cancel``, ``status``, ``list``, ``ensure_running``,
``recover``) so a later backend can send the same jobs to a cluster (a Ray pool, Slurm, Kubernetes)
without touching the pages: every backend keeps its jobs as ``CompressionRun`` rows (:mod:`jobs.queue`),
so status and progress are read from the database whatever runs the job. :class:`LocalBackend`, the
first implementation, makes sure one worker pool (``python -m jobs.worker``) runs on this machine to
execute them. :func:`get_backend` chooses the backend by name (``SHRINKWISE_JOB_BACKEND``, default
``local``, or ``ray`` when ``SHRINKWISE_RAY_ADDRESS`` is set: :mod:`jobs.ray_backend`, imported only then).

Settings a compressor rejects are refused in ``submit``, before anything is queued, with the config's
own message (field, value, allowed range), so a bad form never becomes a failed job.
"""

from __future__ import annotations

import builtins
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from compressors.base import CompressorId
from jobs import queue
from knowledge.ids import MethodId
from knowledge.tables import CompressionRun, RunStatus

log = logging.getLogger(__name__)


@dataclass
class JobSpec:
    """What to compress, how, and on which text. Everything a worker needs, nothing it must guess.

    ``model_ref`` is what :func:`compressors.models.load_model` accepts: ``"demo"``, a folder or
    ``.gguf`` on the server, or an upload folder under the data directory. ``calibration`` names the
    text: ``{"calib_path": ..., "eval_path": ..., "source": "..."}``; empty means the built-in text.
    """

    model_ref: str
    method: MethodId  # knowledge-base method id the run is credited to, e.g. "magnitude-pruning"
    compressor: CompressorId  # bundled compressor id that runs it, e.g. "magnitude"
    config: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    sweep_id: int | None = None  # the sweep this job belongs to (jobs.sweeps); None for a job started alone
    recipe: str | None = None  # the recipe it measures (a sweep's child), so its figures can be matched

    def validate(self) -> dict[str, Any]:
        """Check the compressor exists, implements the method, and accepts the settings; return the
        normalised config dict.

        The method is checked because the run is filed under it: a compressor id or another method's
        id there would send the measured figures to no page, or to the wrong one.
        Raises :class:`compressors.base.CompressionError` / ``ConfigError`` whose message names the bad
        value and what is allowed.
        """
        from compressors.base import CompressorConfig, check_pairing, get_compressor

        comp = get_compressor(self.compressor)
        check_pairing(self.method, self.compressor)
        config: CompressorConfig = comp.config_cls.from_dict(dict(self.config))
        return config.to_dict()


@dataclass(frozen=True)
class JobInfo:
    """A read-only view of one job for the pages: state, progress and (when done) results."""

    id: int
    status: RunStatus
    model_ref: str
    model_name: str
    method: str
    compressor: str
    config: dict[str, Any]
    stage: str | None
    fraction: float
    elapsed_s: float | None
    log_tail: str
    error: str | None
    cancel_requested: bool
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: str | None
    calibration: dict[str, Any]
    before_metrics: dict[str, Any]
    after_metrics: dict[str, Any]
    artifacts: dict[str, str]
    samples: dict[str, Any]
    timings: dict[str, float]
    machine: str | None
    owner: str | None = None  # who queued it (jobs.access); None for runs stored before owners existed
    public_id: str | None = None  # the id in links; never the sequential ``id``
    sweep_id: int | None = None  # the sweep it belongs to (jobs.sweeps), if any
    recipe: str | None = None  # the recipe a sweep's child measures

    @property
    def finished(self) -> bool:
        return self.status.finished

    @property
    def active(self) -> bool:
        return not self.status.finished

    @classmethod
    def from_row(cls, run: CompressionRun) -> JobInfo:
        return cls(
            id=run.stored_id,
            status=RunStatus(run.status),
            model_ref=run.model_ref,
            model_name=run.model_name,
            method=run.method,
            compressor=run.compressor,
            config=dict(run.config or {}),
            stage=run.stage,
            fraction=float(run.fraction or 0.0),
            elapsed_s=run.elapsed_s,
            log_tail=run.log_tail or "",
            error=run.error,
            cancel_requested=bool(run.cancel_requested),
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            worker_id=run.worker_id,
            calibration=dict(run.calibration or {}),
            before_metrics=dict(run.before_metrics or {}),
            after_metrics=dict(run.after_metrics or {}),
            artifacts=dict(run.artifacts or {}),
            samples=dict(run.samples or {}),
            timings=dict(run.timings or {}),
            machine=run.machine,
            owner=run.owner,
            public_id=run.public_id,
            sweep_id=run.sweep_id,
            recipe=run.recipe,
        )


@runtime_checkable
class JobBackend(Protocol):
    """Where compression jobs go. Implementations must make ``submit`` durable before returning."""

    def submit(self, spec: JobSpec) -> int:
        """Queue a job; returns its id. Raises ``CompressionError`` for settings the compressor rejects."""

    def cancel(self, job_id: int) -> RunStatus:
        """Cancel a queued job at once, or ask a running one to stop; returns the status now."""

    def status(self, job_id: int) -> JobInfo:
        """The job's current state and progress; ``KeyError`` for an unknown id."""

    def find(self, public_id: str) -> JobInfo:
        """The job a link names by its public id; ``KeyError`` when there is none."""

    def list(
        self,
        *,
        status: Iterable[RunStatus | str] | None = None,
        model_name: str | None = None,
        method: str | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[JobInfo]:
        """Jobs, newest first, filtered by status, model, method and owner (None: everyone's)."""

    def ensure_running(self) -> bool:
        """Make sure something will execute the queued jobs; True when this call started it."""

    def recover(self, stale_after_s: float | None = None) -> builtins.list[int]:
        """Fail jobs left ``running`` by a worker that is gone (see :func:`jobs.queue.recover_interrupted`)."""


class LocalBackend:
    """Jobs in the Shrinkwise database, executed by the worker pool on this machine.

    ``autostart=True`` starts the worker process (if none holds the lock) whenever a job is submitted,
    so the app needs no separate service; ``scripts/run-app.sh`` also starts one with the server.
    """

    def __init__(self, url: str | None = None, autostart: bool = True) -> None:
        self.url = url
        self.autostart = autostart

    def submit(self, spec: JobSpec) -> int:
        run = queue.enqueue(spec, url=self.url)
        if self.autostart:
            self.ensure_running()
        return run.stored_id

    def cancel(self, job_id: int) -> RunStatus:
        status = queue.request_cancel(job_id, url=self.url)
        log.info("cancel requested for job #%s (now %s)", job_id, status)
        return status

    def status(self, job_id: int) -> JobInfo:
        run = queue.get_run(job_id, url=self.url)
        if run is None:
            raise KeyError(f"no job #{job_id}")
        if not run.public_id:  # stored before public ids existed: give it one for its links
            queue.ensure_public_id(job_id, url=self.url)
            run = queue.get_run(job_id, url=self.url) or run
        return JobInfo.from_row(run)

    def find(self, public_id: str) -> JobInfo:
        run = queue.get_run_by_public_id(public_id, url=self.url)
        if run is None:
            raise KeyError(f"no job with the public id {public_id!r}")
        return JobInfo.from_row(run)

    def list(
        self,
        *,
        status: Iterable[RunStatus | str] | None = None,
        model_name: str | None = None,
        method: str | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[JobInfo]:
        rows = queue.list_runs(
            status=list(status) if status is not None else None,
            model_name=model_name,
            method=method,
            owner=owner,
            limit=limit,
            url=self.url,
        )
        for r in rows:  # runs stored before public ids existed get one, for their links
            if not r.public_id and r.id is not None:
                r.public_id = queue.ensure_public_id(r.id, url=self.url)
        return [JobInfo.from_row(r) for r in rows]

    def ensure_running(self) -> bool:
        """Start the worker pool if none is running; True when this call started one."""
        from jobs.worker import ensure_worker

        return ensure_worker(url=self.url)

    def recover(self, stale_after_s: float | None = None) -> builtins.list[int]:
        return queue.recover_interrupted(
            stale_after_s=queue.STALE_AFTER_S if stale_after_s is None else stale_after_s, url=self.url
        )

    def worker_state(self) -> dict[str, Any]:
        """What the local pool last wrote about itself (pid, started, last loop, running jobs)."""
        from jobs.worker import worker_state

        return worker_state()


def reconcile(backend: JobBackend, *, start_worker: bool = True) -> builtins.list[int]:
    """What every page visit (and every pool start) does so no job stays stuck: fail (or, when a cancel
    was asked, cancel) the ``running`` jobs whose worker is gone, even when nothing is queued; delete
    expired uploads and job outputs (:func:`jobs.uploads.cleanup_expired`); and start a worker when
    jobs wait and ``start_worker``. Returns the ids of the jobs it ended.
    """
    ended = backend.recover()
    try:
        from jobs.uploads import cleanup_expired

        cleanup_expired()
    except Exception:  # housekeeping must never break a page
        log.exception("cleaning up expired uploads and outputs failed")
    if start_worker and backend.list(status=[RunStatus.QUEUED], limit=1):
        backend.ensure_running()
    return ended


def _ray_backend(**options: Any) -> JobBackend:
    """:class:`jobs.ray_backend.RayBackend`, imported only when chosen (Ray is an optional extra)."""
    from jobs.ray_backend import RayBackend

    return RayBackend(**options)


#: Backend name -> class taking ``url=`` (``SHRINKWISE_JOB_BACKEND`` picks one).
BACKENDS: dict[str, Callable[..., JobBackend]] = {"local": LocalBackend, "ray": _ray_backend}
ENV_BACKEND = "SHRINKWISE_JOB_BACKEND"
#: Set: jobs go to the Ray cluster at this address (jobs.ray_backend) unless SHRINKWISE_JOB_BACKEND says otherwise.
ENV_RAY_ADDRESS = "SHRINKWISE_RAY_ADDRESS"


def default_backend_name() -> str:
    """``$SHRINKWISE_JOB_BACKEND``; else ``ray`` when ``$SHRINKWISE_RAY_ADDRESS`` is set; else ``local``."""
    named = os.environ.get(ENV_BACKEND, "").strip()
    if named:
        return named
    return "ray" if os.environ.get(ENV_RAY_ADDRESS, "").strip() else "local"


def get_backend(name: str | None = None, url: str | None = None, **options: Any) -> JobBackend:
    """The backend named ``name`` (default :func:`default_backend_name`: ``local`` unless configured)."""
    chosen = (name or default_backend_name()).strip().lower()
    try:
        factory = BACKENDS[chosen]
    except KeyError:
        raise ValueError(f"unknown job backend {chosen!r}; known: {sorted(BACKENDS)}") from None
    return factory(url=url, **options)
