"""Jobs on a Ray cluster: each queued job is one Ray task, sized by the job's own cost estimate.

Chosen when ``SHRINKWISE_RAY_ADDRESS`` is set (``ray://`` is not needed: the app joins the cluster as a
driver, e.g. ``SHRINKWISE_RAY_ADDRESS=10.0.0.5:6379``) or ``SHRINKWISE_JOB_BACKEND=ray``
(then ``auto``: the Ray of this machine, started with ``ray start --head``). Ray is imported only
here and only when this backend is used, so the embedded default (:class:`jobs.backend.LocalBackend`)
runs without it (``pip install '.[cluster]'`` adds it).

How a job runs (docs/jobs.md, "Ray"):

* ``submit`` stores the job exactly as the local backend does (:meth:`LocalBackend.submit`, so every
  :class:`~jobs.backend.JobSpec` field is stored), then launches a Ray task for it with the resources
  of :func:`task_resources`: memory from the compressor's estimate of the run's peak
  (:func:`jobs.preflight.estimate_cost`) plus the interpreter's share, CPUs (1 for a run estimated
  under a minute, else ``SHRINKWISE_RAY_JOB_CPUS``, default 4), a GPU when the cluster has GPUs and the
  run streams its blocks through one. The row stays ``queued`` (with ``worker_id = "ray:<task id>"``, which
  keeps local pools off it) until Ray starts the task on a node.
* The task claims its row (compare-and-set), then runs it with the worker's own
  :func:`jobs.worker.run_one`: the same executor, progress, heartbeat, cancel polling and results as a
  local job, written to the database at ``SHRINKWISE_DATABASE_URL`` (PostgreSQL for a team); outputs
  go to ``<data dir>/runs/<id>/`` on the shared storage (``SHRINKWISE_RAY_DATA_DIR``, default the app's
  data folder, which must be the same path on every node: an NFS mount or shared folder).
* ``cancel`` sets the row's cancel flag (the job stops at its next layer, as locally); a task that
  has not stopped :data:`CANCEL_GRACE_S` later is ended with ``ray.cancel(force=True)``; a task still
  waiting for resources is cancelled in Ray at once.
* A watcher thread (one per process) waits on the task references: a task that ends with a Ray error
  (its node died, its worker was killed for memory) fails its job with the reason, e.g. "the Ray
  worker running this job died: ...", instead of leaving it ``running``.

Jobs are owned by the process that submitted them (Ray's ownership model): when the app restarts,
its running tasks end, and :meth:`RayBackend.recover` fails them by their stale heartbeat, as for a
dead local pool; ``ensure_running`` sends queued jobs that nobody runs to the cluster again.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressors.base import CompressionError
from jobs import queue
from jobs.backend import JobSpec, LocalBackend
from knowledge.paths import ENV_HOME, ENV_URL, data_home, database_url
from knowledge.tables import RunStatus

log = logging.getLogger(__name__)

ENV_RAY_ADDRESS = "SHRINKWISE_RAY_ADDRESS"
ENV_RAY_DATA_DIR = "SHRINKWISE_RAY_DATA_DIR"
ENV_RAY_JOB_CPUS = "SHRINKWISE_RAY_JOB_CPUS"
ENV_RAY_JOB_GPUS = "SHRINKWISE_RAY_JOB_GPUS"
ENV_RAY_RESOURCES = "SHRINKWISE_RAY_RESOURCES"
#: Every job's task carries this prefix in ``worker_id``: ``ray:<task id>``.
WORKER_PREFIX = queue.RAY_WORKER_PREFIX
#: Ray namespace of the app's driver (jobs of two deployments on one cluster stay apart in ``ray list``).
NAMESPACE = "shrinkwise"
#: Memory a job process needs beyond the compressor's estimate: Python, torch and transformers.
PROCESS_OVERHEAD_BYTES = 1 << 30
#: A run estimated under this many seconds asks for one CPU (short jobs pack); longer ones get more.
SHORT_RUN_S = 60.0
DEFAULT_LONG_RUN_CPUS = 4.0
#: How long a cancelled running job may take to stop by itself before its task is killed.
CANCEL_GRACE_S = 3.0
#: Why a job whose task died is failed (the Ray error's first line follows).
DIED_REASON = "the Ray worker running this job died: {detail}"
NOT_STARTED_REASON = "the Ray task for this job failed before it started: {detail}"


class RayUnavailable(CompressionError):
    """Ray is not installed or the cluster cannot be reached; the message says what to do (the Compress
    page shows it as "Not queued: ...", like any refusal)."""


def ray_module() -> Any:
    """``import ray``, or a clear error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "the Ray job backend needs Ray: pip install 'shrinkwise[cluster]' (or unset "
            f"{ENV_RAY_ADDRESS} to run jobs in the local worker pool)"
        ) from None
    return ray


def configured_address() -> str | None:
    """``SHRINKWISE_RAY_ADDRESS`` (None when unset or blank)."""
    return os.environ.get(ENV_RAY_ADDRESS, "").strip() or None


# ---------------------------------------------------------------------------------------------------
# resources of one job's task


@dataclass(frozen=True)
class TaskResources:
    """What one job's Ray task asks the scheduler for, and how it was worked out (shown in the job log)."""

    num_cpus: float
    memory_bytes: int
    num_gpus: float = 0.0
    custom: dict[str, float] = field(default_factory=dict)
    basis: str = ""

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``remote_fn.options(...)``."""
        opts: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes > 0:
            opts["memory"] = int(self.memory_bytes)
        if self.custom:
            opts["resources"] = dict(self.custom)
        return opts

    def describe(self) -> str:
        gpu = f", {self.num_gpus:g} GPU" if self.num_gpus else ""
        extra = "".join(f", {v:g} {k}" for k, v in self.custom.items())
        return f"{self.num_cpus:g} CPU, {self.memory_bytes / 2**30:.2f} GiB memory{gpu}{extra} ({self.basis})"


def _env_float(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ValueError(f"{name}={value:g} must not be negative")
    return value


def custom_resources_setting() -> dict[str, float]:
    """``SHRINKWISE_RAY_RESOURCES``: custom Ray resources every job asks for (JSON, e.g.
    ``{"shrinkwise": 1}`` to keep jobs on the nodes started with ``--resources '{"shrinkwise": 4}'``)."""
    raw = os.environ.get(ENV_RAY_RESOURCES, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
        return {str(k): float(v) for k, v in value.items()}
    except (ValueError, AttributeError, TypeError):
        raise ValueError(
            f"{ENV_RAY_RESOURCES}={raw!r} must be a JSON object of resource name -> amount, "
            'e.g. {"shrinkwise": 1}'
        ) from None


def _calibration_of(calibration: dict[str, Any]) -> Any:
    from compressors.base import DEFAULT_CALIBRATION, Calibration

    return Calibration(
        samples=int(calibration.get("n_calib_samples") or DEFAULT_CALIBRATION.samples),
        seq_len=int(calibration.get("calib_seq_len") or DEFAULT_CALIBRATION.seq_len),
    )


def task_resources(
    run: Any,
    *,
    cluster_gpus: float = 0.0,
    largest_node_cpus: float | None = None,
    custom: dict[str, float] | None = None,
    model_info: Any = None,
) -> TaskResources:
    """The resources of ``run``'s task, from the compressor's own estimate for this model and settings.

    Memory: the estimated peak plus :data:`PROCESS_OVERHEAD_BYTES`. CPUs: ``SHRINKWISE_RAY_JOB_CPUS``
    when set, else 1 for a run estimated under :data:`SHORT_RUN_S` and 4 (at most the largest node's)
    otherwise; Ray sets the task's thread count (``OMP_NUM_THREADS``) to it. GPUs:
    ``SHRINKWISE_RAY_JOB_GPUS`` when set, else 1 when the cluster has GPUs and the run streams its blocks
    through the device (:func:`compressors.streaming.streaming_reason`), else 0 (Ray then hides every GPU
    from the task, so it runs on the CPU). A model that cannot be read here gets 1 CPU and no memory
    reservation; the job itself then reports why the model cannot be read. ``model_info``: the model's
    inspection when the caller has it (or the exception the inspection raised); else it is inspected here.
    """
    from compressors.base import get_compressor

    cpus_set, gpus_set = _env_float(ENV_RAY_JOB_CPUS), _env_float(ENV_RAY_JOB_GPUS)
    custom = dict(custom or {})
    try:
        from compressors.streaming import streaming_reason
        from jobs import preflight

        info = model_info if model_info is not None else preflight.check_model(run.model_ref)
        if isinstance(info, BaseException):  # the inspection already failed (RayBackend caches it)
            raise info
        calibration = dict(run.calibration or {})
        cost = preflight.estimate_cost(
            run.compressor,
            info,
            dict(run.config or {}),
            _calibration_of(calibration),
            eval_windows=calibration.get("eval_windows"),
            eval_seq_len=calibration.get("eval_seq_len"),
        )
        comp = get_compressor(run.compressor)
        streams = streaming_reason(info, comp, comp.config_cls.from_dict(dict(run.config or {}))) is None
    except Exception as exc:  # the job reports an unreadable model itself; here it only sizes the task
        log.warning("job #%s: no cost estimate (%s); asking Ray for 1 CPU", run.id, exc)
        return TaskResources(
            num_cpus=cpus_set if cpus_set is not None else 1.0,
            memory_bytes=0,
            num_gpus=gpus_set or 0.0,
            custom=custom,
            basis=f"no estimate: {type(exc).__name__}",
        )
    seconds = sum(cost.stages.values()) if cost.stages else cost.estimate.seconds
    if cpus_set is not None:
        cpus = cpus_set
    elif seconds <= SHORT_RUN_S:
        cpus = 1.0
    else:
        cpus = min(DEFAULT_LONG_RUN_CPUS, largest_node_cpus or DEFAULT_LONG_RUN_CPUS)
    gpus = gpus_set if gpus_set is not None else (1.0 if cluster_gpus > 0 and streams else 0.0)
    memory = int(cost.estimate.peak_memory_bytes) + PROCESS_OVERHEAD_BYTES
    return TaskResources(
        num_cpus=max(cpus, 0.0),
        memory_bytes=memory,
        num_gpus=gpus,
        custom=custom,
        basis=f"estimated peak {cost.estimate.peak_memory_bytes / 2**30:.2f} GiB + interpreter, ~{seconds:.0f} s",
    )


# ---------------------------------------------------------------------------------------------------
# the task (runs on a cluster node)


def run_job_task(
    run_id: int, url: str | None, home: str | None, executor: str | None, resources: str = ""
) -> int:
    """The body of a job's Ray task: claim the row, run it as a local job would, return its exit code.

    Runs in a fresh Ray worker process (``max_calls=1``), so setting the data folder and database here
    affects this job only. Returns 0 without doing anything when the job is no longer queued (it was
    cancelled while waiting, or another task of a re-sent job has it).
    """
    import ray

    from jobs.worker import job_dir, run_one
    from knowledge.db import dispose_engines

    if home:
        os.environ[ENV_HOME] = home
    if url:
        os.environ[ENV_URL] = url
    dispose_engines()
    ctx = ray.get_runtime_context()
    task_id = ctx.get_task_id() or ""
    out_dir = job_dir(run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / "job.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    run = queue.claim_run(run_id, WORKER_PREFIX + task_id, url=url)
    if run is None:
        log.info("job #%s is not queued any more; Ray task %s has nothing to do", run_id, task_id)
        return 0
    queue.update_progress(
        run_id,
        "starting",
        0.0,
        f"Ray task {task_id} on node {ctx.get_node_id()} ({socket.gethostname()}); {resources}",
        url=url,
    )
    return run_one(run_id, executor, url=url)


# ---------------------------------------------------------------------------------------------------
# the driver side: tracked tasks and the watcher


@dataclass
class _Task:
    run_id: int
    ref: Any
    url: str | None
    task_id: str = ""
    cancel_seen_at: float | None = None
    forced: bool = False


class _Tracker:
    """The task references this process owns, and the watcher thread that ends jobs whose task died.

    One per process (:data:`_TRACKER`): every :class:`RayBackend` built by a page shares it.
    """

    def __init__(self) -> None:
        self.tasks: dict[int, _Task] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.wake = threading.Event()
        self.poll_s = 0.5

    def add(self, task: _Task) -> None:
        with self.lock:
            self.tasks[task.run_id] = task
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="shrinkwise-ray-watcher", daemon=True)
                self.thread.start()
        self.wake.set()

    def get(self, run_id: int) -> _Task | None:
        with self.lock:
            return self.tasks.get(run_id)

    def tracked(self) -> set[int]:
        with self.lock:
            return set(self.tasks)

    def _loop(self) -> None:
        ray = ray_module()
        while True:
            with self.lock:
                tasks = list(self.tasks.values())
            if not tasks:
                self.wake.wait(self.poll_s)
                self.wake.clear()
                continue
            try:
                ready, _ = ray.wait([t.ref for t in tasks], num_returns=len(tasks), timeout=self.poll_s)
            except Exception:  # the driver lost the cluster for a moment: try again
                log.exception("waiting on the Ray tasks failed")
                time.sleep(self.poll_s)
                continue
            ready_ids = {r.hex() for r in ready}
            for t in tasks:
                try:
                    if t.ref.hex() in ready_ids:
                        self._settle(t)
                        with self.lock:
                            self.tasks.pop(t.run_id, None)
                    else:
                        self._watch_cancel(t)
                except Exception:  # a database hiccup must not stop the watcher
                    log.exception("settling the Ray task of job #%s failed", t.run_id)

    def _watch_cancel(self, t: _Task) -> None:
        """Kill the task of a job that was asked to stop and has not within :data:`CANCEL_GRACE_S`."""
        if t.forced:
            return
        run = queue.get_run(t.run_id, url=t.url)
        if run is None or not run.cancel_requested:
            return
        now = time.monotonic()
        if t.cancel_seen_at is None:
            t.cancel_seen_at = now
        elif now - t.cancel_seen_at > CANCEL_GRACE_S:
            log.warning(
                "job #%s did not stop %.0f s after Cancel; cancelling its Ray task", t.run_id, CANCEL_GRACE_S
            )
            t.forced = True
            ray_module().cancel(t.ref, force=True)

    def _settle(self, t: _Task) -> None:
        """The task ended: a job it left unfinished is ended here, with the task's error as the reason."""
        ray = ray_module()
        error: BaseException | None = None
        try:
            ray.get(t.ref, timeout=0)
        except BaseException as exc:  # a Ray error: the task, its worker or its node failed
            error = exc
        run = queue.get_run(t.run_id, url=t.url)
        if run is None or RunStatus(run.status).finished:
            return
        if run.worker_id and run.worker_id != WORKER_PREFIX + t.task_id:
            return  # another worker has the job (it was sent again, and that task claimed it): not ours to end
        cancelled = bool(run.cancel_requested) or isinstance(error, ray.exceptions.TaskCancelledError)
        if cancelled:
            queue.mark_cancelled(
                t.run_id,
                url=t.url,
                reason="cancelled by the user"
                + (" (it did not stop by itself, so its Ray task was cancelled)" if t.forced else ""),
            )
            return
        detail = _first_line(error) if error is not None else "the task returned without recording a result"
        template = NOT_STARTED_REASON if RunStatus(run.status) is RunStatus.QUEUED else DIED_REASON
        queue.fail_run(t.run_id, template.format(detail=detail), url=t.url)
        log.warning("job #%s failed: %s", t.run_id, detail)


def _first_line(exc: BaseException) -> str:
    """The useful part of a Ray error: its type and first sentence (Ray appends pages of advice)."""
    text = str(exc).strip().splitlines()
    head = text[0] if text else ""
    if type(exc).__name__ == "RayTaskError" or head.startswith("ray::"):
        # a Python error inside the task: the last line of the traceback says what it was
        head = text[-1] if text else head
    if ". " in head:
        head = head.split(". ")[0] + "."
    return f"{type(exc).__name__}: {head}"[:400]


def _model_stamp(ref: str) -> float:
    """Changes when the model's files do: the newest modification time of the path and its entries."""
    stamps = [0.0]
    try:
        p = Path(ref)
        stamps.append(p.stat().st_mtime)
        if p.is_dir():
            stamps.extend(e.stat().st_mtime for e in p.iterdir())
    except OSError:
        pass
    return max(stamps)


_MODEL_INFO: dict[tuple[str, float], Any] = {}
_TRACKER = _Tracker()
_INIT_LOCK = threading.Lock()
_REMOTE: dict[str, Any] = {}


def _connect(address: str) -> Any:
    """Join the cluster at ``address`` as a driver (once per process); returns the ``ray`` module."""
    ray = ray_module()
    with _INIT_LOCK:
        if not ray.is_initialized():
            try:
                ray.init(
                    address=address,
                    namespace=NAMESPACE,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                )
            except Exception as exc:
                raise RayUnavailable(
                    f"cannot reach the Ray cluster at {address!r} ({type(exc).__name__}: {exc}); start it "
                    f"with `ray start --head` (docs/deploy.md) or unset {ENV_RAY_ADDRESS}"
                ) from exc
        if "task" not in _REMOTE:
            # max_retries=0: a job whose node died is failed with the reason, never silently re-run
            _REMOTE["task"] = ray.remote(max_retries=0, max_calls=1)(run_job_task)
    return ray


# ---------------------------------------------------------------------------------------------------
# the backend


class RayBackend(LocalBackend):
    """Jobs in the Shrinkwise database, each executed as a Ray task on the cluster at ``address``.

    Reading jobs (``status``, ``find``, ``list``) is :class:`LocalBackend`'s: the pages read one table
    whatever ran the job. ``executor`` replaces the job executor (tests, as for the local pool);
    ``resources``: custom Ray resources every job asks for (default ``SHRINKWISE_RAY_RESOURCES``);
    ``data_dir``: the shared folder the tasks write outputs to (default ``SHRINKWISE_RAY_DATA_DIR``, else
    this process's data folder).
    """

    def __init__(
        self,
        url: str | None = None,
        autostart: bool = True,
        *,
        address: str | None = None,
        executor: str | None = None,
        resources: dict[str, float] | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        super().__init__(url=url, autostart=autostart)
        self.address = address or configured_address() or "auto"
        self.executor = executor
        self.custom = custom_resources_setting() if resources is None else dict(resources)
        chosen = data_dir or os.environ.get(ENV_RAY_DATA_DIR, "").strip() or None
        self.data_dir = str(Path(chosen).expanduser()) if chosen else None

    # -- sending jobs to the cluster ------------------------------------------------------------

    def submit(self, spec: JobSpec) -> int:
        _connect(self.address)  # a missing Ray or an unreachable cluster is said before anything is queued
        job_id = LocalBackend(url=self.url, autostart=False).submit(spec)
        try:
            self._launch(job_id)
        except Exception as exc:  # queued and durable: the next page visit's ensure_running sends it again
            log.exception("job #%s is queued but could not be sent to Ray", job_id)
            queue.update_progress(
                job_id, "queued", 0.0, f"not sent to the Ray cluster yet: {exc}", url=self.url
            )
        return job_id

    def _launch(self, job_id: int) -> None:
        ray = _connect(self.address)
        run = queue.get_run(job_id, url=self.url)
        if run is None or RunStatus(run.status) is not RunStatus.QUEUED:
            return
        totals = ray.cluster_resources()
        largest = max(
            (n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0
        )
        res = task_resources(
            run,
            cluster_gpus=float(totals.get("GPU", 0.0)),
            largest_node_cpus=largest or None,
            custom=self.custom,
            model_info=self._model_info(run.model_ref),
        )
        url = self.url or database_url()
        home = self.data_dir or str(data_home())
        ref = (
            _REMOTE["task"]
            .options(**res.options(), name=f"shrinkwise-job-{job_id}")
            .remote(job_id, url, home, self.executor, res.describe())
        )
        task_id = ref.task_id().hex()
        _TRACKER.add(_Task(job_id, ref, self.url, task_id))
        if queue.reserve_run(job_id, WORKER_PREFIX + task_id, url=self.url):  # else it has started already
            queue.update_progress(
                job_id,
                "queued",
                0.0,
                f"sent to the Ray cluster as task {task_id}: {res.describe()}" + self._fit_note(ray, res),
                url=self.url,
            )
        log.info("job #%s sent to Ray as task %s (%s)", job_id, task_id, res.describe())

    @staticmethod
    def _model_info(ref: str) -> Any:
        """The model's inspection (or why it failed), once per model files and process: a sweep sends
        many jobs on one model, and the pages build a new backend for every call."""
        key = (ref, _model_stamp(ref))
        with _INIT_LOCK:
            if key in _MODEL_INFO:
                return _MODEL_INFO[key]
        try:
            from jobs import preflight

            found: Any = preflight.check_model(ref)
        except Exception as exc:  # sized without an estimate; the job itself reports the problem
            log.warning("cannot inspect %s to size its Ray task: %s", ref, exc)
            found = exc
        with _INIT_LOCK:
            if len(_MODEL_INFO) >= 64:
                _MODEL_INFO.clear()
            _MODEL_INFO[key] = found
        return found

    @staticmethod
    def _fit_note(ray: Any, res: TaskResources) -> str:
        """A warning in the job's log when no node of the cluster is large enough for the task now."""
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        want = {"CPU": res.num_cpus, "GPU": res.num_gpus, "memory": float(res.memory_bytes), **res.custom}
        if any(all(n.get(k, 0.0) >= v for k, v in want.items() if v) for n in nodes):
            return ""
        return "; no node of the cluster offers that now: the job waits until one joins"

    def cancel(self, job_id: int) -> RunStatus:
        status = super().cancel(job_id)
        task = _TRACKER.get(job_id)
        if task is not None and status is RunStatus.CANCELLED:
            # cancelled while waiting in the cluster: take the task off Ray's queue too
            try:
                ray_module().cancel(task.ref, force=False)
            except Exception:
                log.exception("ray.cancel of job #%s failed", job_id)
        return status

    def ensure_running(self) -> bool:
        """Send the queued jobs no task of this process holds to the cluster; True when it sent any.

        They are jobs queued by another way (a sweep, the CLI) or whose task died with an earlier app
        process. A job sent twice still runs once: each task claims its row with a compare-and-set.
        """
        mine = _TRACKER.tracked()
        waiting = [
            r.stored_id
            for r in queue.list_runs(status=RunStatus.QUEUED, newest_first=False, url=self.url)
            if r.stored_id not in mine
        ]
        if not waiting:
            return False
        try:
            for job_id in waiting:
                self._launch(job_id)
        except RayUnavailable as exc:  # a page visit must not fail: the jobs wait until the cluster is back
            log.warning("queued jobs wait: %s", exc)
            return False
        return True

    def recover(self, stale_after_s: float | None = None) -> builtins.list[int]:
        """Fail the ``running`` jobs whose worker is gone: tasks of this process are ended by the
        watcher as soon as Ray reports them dead; others (a previous app process's, a local pool's) by
        their heartbeat, older than ``stale_after_s``."""
        return queue.recover_interrupted(
            stale_after_s=queue.STALE_AFTER_S if stale_after_s is None else stale_after_s,
            keep=_TRACKER.tracked(),
            url=self.url,
        )

    def worker_state(self) -> dict[str, Any]:
        """What the pages show about the executor: the cluster's address and its resources."""
        state: dict[str, Any] = {
            "backend": "ray",
            "address": self.address,
            "tasks": sorted(_TRACKER.tracked()),
        }
        try:
            ray = _connect(self.address)
            state["running"] = True
            state["cluster_resources"] = ray.cluster_resources()
        except RayUnavailable as exc:
            state["running"] = False
            state["error"] = str(exc)
        return state


def shutdown() -> None:
    """Leave the cluster: forget this process's tasks and disconnect (tests, an app shutting down).

    Ray ends the tasks this process owns; their jobs are then failed by their stale heartbeat
    (:meth:`RayBackend.recover`) like those of a stopped local pool.
    """
    with _TRACKER.lock:
        _TRACKER.tasks.clear()
    _REMOTE.clear()
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
