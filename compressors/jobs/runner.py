"""The job-runner interface the web app calls, and its local implementation.

``JobRunner`` is a ``Protocol`` with four verbs (``submit``, ``cancel``, ``status``, ``list``) so a later
runner can send the same jobs to a cluster (Slurm, Kubernetes, a Ray pool) without touching the pages.
:class:`LocalJobRunner` keeps jobs as ``CompressionRun`` rows in the Shrinkwise database and makes sure
one worker pool (``python -m compressors.jobs.worker``) is running on this machine to execute them.

Settings a compressor rejects are refused in ``submit``, before anything is queued, with the config's
own message (field, value, allowed range), so a bad form never becomes a failed job.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from knowledge import runs as runs_db
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
    method: str  # knowledge-base method id (what the user chose), e.g. "gptq"
    compressor: str  # bundled compressor id that runs it, e.g. "gptq"
    config: dict[str, Any] = field(default_factory=dict)
    model_name: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None

    def validate(self) -> dict[str, Any]:
        """Check the compressor exists and accepts the settings; return the normalised config dict.

        Raises :class:`compressors.base.CompressionError` / ``ConfigError`` whose message names the bad
        value and what is allowed.
        """
        from compressors.base import CompressorConfig, get_compressor

        comp = get_compressor(self.compressor)
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
        )


@runtime_checkable
class JobRunner(Protocol):
    """Where compression jobs go. Implementations must make ``submit`` durable before returning."""

    def submit(self, spec: JobSpec) -> int:
        """Queue a job; returns its id. Raises ``CompressionError`` for settings the compressor rejects."""

    def cancel(self, job_id: int) -> RunStatus:
        """Cancel a queued job at once, or ask a running one to stop; returns the status now."""

    def status(self, job_id: int) -> JobInfo:
        """The job's current state; ``KeyError`` for an unknown id."""

    def list(
        self,
        *,
        status: Iterable[RunStatus | str] | None = None,
        model_name: str | None = None,
        method: str | None = None,
        limit: int | None = None,
    ) -> list[JobInfo]:
        """Jobs, newest first, filtered by status, model and method."""


class LocalJobRunner:
    """Jobs in the Shrinkwise database, executed by the worker pool on this machine.

    ``autostart=True`` starts the worker process (if none holds the lock) whenever a job is submitted,
    so the app needs no separate service; ``scripts/run-app.sh`` also starts one with the server.
    """

    def __init__(self, url: str | None = None, autostart: bool = True) -> None:
        self.url = url
        self.autostart = autostart

    def submit(self, spec: JobSpec) -> int:
        config = spec.validate()
        run = runs_db.create_run(
            model_ref=spec.model_ref,
            model_name=spec.model_name or spec.model_ref,
            method=spec.method,
            compressor=spec.compressor,
            config=config,
            calibration=dict(spec.calibration or {}),
            owner=spec.owner,
            url=self.url,
        )
        if self.autostart:
            self.ensure_worker()
        return run.stored_id

    def cancel(self, job_id: int) -> RunStatus:
        status = runs_db.request_cancel(job_id, url=self.url)
        log.info("cancel requested for job #%s (now %s)", job_id, status)
        return status

    def status(self, job_id: int) -> JobInfo:
        run = runs_db.get_run(job_id, url=self.url)
        if run is None:
            raise KeyError(f"no job #{job_id}")
        return JobInfo.from_row(run)

    def list(
        self,
        *,
        status: Iterable[RunStatus | str] | None = None,
        model_name: str | None = None,
        method: str | None = None,
        limit: int | None = None,
    ) -> list[JobInfo]:
        rows = runs_db.list_runs(
            status=list(status) if status is not None else None,
            model_name=model_name,
            method=method,
            limit=limit,
            url=self.url,
        )
        return [JobInfo.from_row(r) for r in rows]

    def ensure_worker(self) -> bool:
        """Start the worker pool if none is running; True when this call started one."""
        from compressors.jobs.worker import ensure_worker

        return ensure_worker(url=self.url)

    def worker_state(self) -> dict[str, Any]:
        from compressors.jobs.worker import worker_state

        return worker_state()


def get_runner(url: str | None = None) -> JobRunner:
    """The runner the app uses (local for now; a cluster runner would be chosen here by a setting)."""
    return LocalJobRunner(url=url)
