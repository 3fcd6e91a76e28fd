"""The worker pool: claims queued compression jobs from the database and runs each in a child process.

Run it with ``python -m jobs.worker`` (the app starts one on demand, ``scripts/run-app.sh``
starts one with the server). Design:

* **One pool per data folder.** The pool holds an exclusive ``flock`` on ``<data>/worker.lock`` for its
  whole life; a second pool started by a race exits at once. ``<data>/worker.json`` says which process
  holds it and when it last looked at the queue (the app shows this).
* **Atomic claims.** A job moves ``queued -> running`` through a compare-and-set UPDATE
  (``jobs.queue.claim_next_run``), so two pools sharing one database (two machines on PostgreSQL)
  never run the same job.
* **At most ``SHRINKWISE_MAX_JOBS`` jobs at once** (default 1: a compression uses every core).
* **One child process per job** (``--run-one ID``): the child writes progress, heartbeat and results to
  the job's row through its :class:`RowReporter`; it polls the row's cancel flag once a second and sets ``RunContext.cancel_event``, which
  the compressor checks at least once per layer. If a cancelled child has not stopped after a grace
  period the pool terminates it, so Cancel always takes effect within seconds. A child that dies (crash,
  out-of-memory kill) fails its job with the exit code instead of taking the pool down.
* **Restart recovery** (:func:`jobs.queue.recover_interrupted`, on start and every ``stale_after_s / 2``):
  jobs still ``running`` whose worker process is gone (same host, dead pid) or whose heartbeat is older
  than ``stale_after_s`` are marked failed with the reason; queued jobs simply continue. A child whose pool died exits too (it watches its parent), so no orphan finishes a
  job that was already marked failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressors.progress import Reporter, base_stage
from jobs import queue
from jobs.queue import RESTART_REASON
from knowledge.db import dispose_engines, init_db
from knowledge.paths import ENV_URL, data_home
from knowledge.tables import RunStatus

log = logging.getLogger(__name__)

ENV_MAX_JOBS = "SHRINKWISE_MAX_JOBS"
ENV_EXECUTOR = "SHRINKWISE_JOB_EXECUTOR"
DEFAULT_EXECUTOR = "jobs.execute:execute"
LOCK_NAME = "worker.lock"
STATE_NAME = "worker.json"
LOG_NAME = "worker.log"
#: A running job whose heartbeat is older than this is taken as abandoned (its worker died).
STALE_AFTER_S = queue.STALE_AFTER_S
#: How long a cancelled job may take to stop by itself before the pool terminates its process.
CANCEL_GRACE_S = 3.0
HEARTBEAT_S = 1.0

_ROOT = str(Path(__file__).resolve().parents[1])


def max_jobs_setting() -> int:
    """``SHRINKWISE_MAX_JOBS`` (default 1), validated."""
    raw = os.environ.get(ENV_MAX_JOBS, "1").strip() or "1"
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(
            f"{ENV_MAX_JOBS}={raw!r} is not a whole number; set it to 1 or more (default 1)"
        ) from None
    if n < 1:
        raise ValueError(f"{ENV_MAX_JOBS}={n} must be at least 1 (default 1)")
    return n


def load_executor(dotted: str | None = None) -> Callable[..., dict[str, Any]]:
    """The function that does one job, ``module:function`` (``SHRINKWISE_JOB_EXECUTOR`` overrides)."""
    dotted = dotted or os.environ.get(ENV_EXECUTOR) or DEFAULT_EXECUTOR
    module, _, name = dotted.partition(":")
    if not name:
        raise ValueError(f"job executor {dotted!r} must look like 'package.module:function'")
    executor: Callable[..., dict[str, Any]] = getattr(importlib.import_module(module), name)
    return executor


# ---------------------------------------------------------------------------------------------------
# the single-pool lock


class PoolLock:
    """An exclusive, non-blocking lock on ``<data>/worker.lock`` held for the pool's life.

    ``flock`` is released by the kernel when the process dies, so a crashed pool never blocks the next.
    """

    def __init__(self, home: Path | None = None) -> None:
        self.path = (home or data_home()) / LOCK_NAME
        self._fh: Any = None

    def acquire(self) -> bool:
        import fcntl

        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def pool_running(home: Path | None = None) -> bool:
    """True when some process holds the pool lock of this data folder."""
    lock = PoolLock(home)
    if lock.acquire():
        lock.release()
        return False
    return True


def worker_state(home: Path | None = None) -> dict[str, Any]:
    """What ``worker.json`` says (pid, started, last loop) plus whether the lock is held now."""
    path = (home or data_home()) / STATE_NAME
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    state["running"] = pool_running(home)
    return state


def ensure_worker(url: str | None = None, idle_exit_s: float = 900.0, home: Path | None = None) -> bool:
    """Start a worker pool in the background unless one is running; True when one was started.

    The new process is detached (its own session), logs to ``<data>/worker.log`` and exits after
    ``idle_exit_s`` without work; the app calls this again whenever it queues a job or shows queued ones.
    """
    home = home or data_home()
    if pool_running(home):
        return False
    env = dict(os.environ)
    env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if url:
        env[ENV_URL] = url
    env.setdefault("SHRINKWISE_HOME", str(home))
    with open(home / LOG_NAME, "ab") as out:
        subprocess.Popen(
            [sys.executable, "-m", "jobs.worker", "--idle-exit", str(idle_exit_s)],
            cwd=_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    log.info("started a job worker pool (log: %s)", home / LOG_NAME)
    return True


# ---------------------------------------------------------------------------------------------------
# the pool


@dataclass
class _Child:
    run_id: int
    proc: subprocess.Popen[bytes]
    cancel_seen_at: float | None = None


@dataclass
class Worker:
    """A pool of at most ``max_jobs`` job processes. ``tick()`` does one round; ``serve()`` loops.

    Tests drive ``tick()`` directly; ``use_lock=False`` lets two pools share one data folder (as two
    machines would share one PostgreSQL database).
    """

    url: str | None = None
    max_jobs: int = field(default_factory=max_jobs_setting)
    executor: str | None = None
    poll_s: float = 0.5
    stale_after_s: float = STALE_AFTER_S
    cancel_grace_s: float = CANCEL_GRACE_S
    idle_exit_s: float | None = None
    use_lock: bool = True
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )
    children: dict[int, _Child] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_jobs < 1:
            raise ValueError(f"max_jobs={self.max_jobs} must be at least 1")
        self._lock = PoolLock() if self.use_lock else None
        self._started = time.time()

    # -- life cycle -------------------------------------------------------------------------------

    def start(self) -> bool:
        """Take the lock and recover abandoned jobs; False when another pool already runs here."""
        if self._lock is not None and not self._lock.acquire():
            log.info("another worker pool holds %s; exiting", self._lock.path)
            return False
        init_db(self.url)
        queue.recover_interrupted(stale_after_s=self.stale_after_s, keep=self.children, url=self.url)
        try:
            from jobs.uploads import cleanup_expired

            cleanup_expired(url=self.url)
        except Exception:  # housekeeping must never keep the pool from running jobs
            log.exception("cleaning up expired uploads and outputs failed")
        self._write_state()
        return True

    def stop(self, cancel_children: bool = True) -> None:
        """Terminate running children (their jobs are failed with the restart reason) and unlock."""
        for child in list(self.children.values()):
            run = queue.get_run(child.run_id, url=self.url)
            if child.proc.poll() is None and run is not None and RunStatus(run.status).finished:
                try:  # the job has ended and is writing its last rows (evidence): let it finish
                    child.proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
            if child.proc.poll() is None and cancel_children:
                child.proc.terminate()
                try:
                    child.proc.wait(10)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
            self._settle(child, default_error=RESTART_REASON)
        self.children.clear()
        if self._lock is not None:
            self._lock.release()

    def serve(self, stop: threading.Event | None = None) -> None:
        """Loop until ``stop`` is set, SIGTERM arrives, or (with ``idle_exit_s``) the queue stays empty."""
        stop = stop or threading.Event()
        idle_since = time.monotonic()
        last_recover = time.monotonic()
        try:
            while not stop.is_set():
                self.tick()
                if self.children:
                    idle_since = time.monotonic()
                elif self.idle_exit_s is not None and time.monotonic() - idle_since > self.idle_exit_s:
                    log.info("no jobs for %.0f s; the worker pool exits", self.idle_exit_s)
                    break
                if time.monotonic() - last_recover > self.stale_after_s / 2:
                    # another machine's pool may have died: its jobs are failed by their heartbeat
                    queue.recover_interrupted(
                        stale_after_s=self.stale_after_s, keep=self.children, url=self.url
                    )
                    last_recover = time.monotonic()
                stop.wait(self.poll_s)
        finally:
            self.stop()

    # -- one round ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Reap finished children, enforce cancels, and claim jobs up to the limit."""
        for child in list(self.children.values()):
            if child.proc.poll() is not None:
                self._settle(child)
                del self.children[child.run_id]
            else:
                self._watch(child)
        while len(self.children) < self.max_jobs:
            run = queue.claim_next_run(self.worker_id, url=self.url)
            if run is None:
                break
            self.children[run.stored_id] = self._spawn(run.stored_id)
            log.info("job #%s started (%s on %s)", run.id, run.compressor, run.model_name)
        self._write_state()

    def _spawn(self, run_id: int) -> _Child:
        cmd = [sys.executable, "-m", "jobs.worker", "--run-one", str(run_id)]
        if self.executor:
            cmd += ["--executor", self.executor]
        env = dict(os.environ)
        env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        if self.url:
            env[ENV_URL] = self.url
        out_dir = job_dir(run_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        with open(out_dir / "job.log", "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        return _Child(run_id, proc)

    def _watch(self, child: _Child) -> None:
        run = queue.get_run(child.run_id, url=self.url)
        if run is None or not run.cancel_requested:
            return
        # a job still starting up (importing torch) has done nothing worth a graceful stop
        starting = run.stage in (None, "starting") and run.fraction == 0
        seen_at = child.cancel_seen_at
        if seen_at is None and not starting:
            child.cancel_seen_at = time.monotonic()
        elif starting or (
            child.cancel_seen_at is not None and time.monotonic() - child.cancel_seen_at > self.cancel_grace_s
        ):
            log.warning(
                "job #%s %s; terminating it",
                child.run_id,
                "was cancelled while starting"
                if starting
                else f"did not stop {self.cancel_grace_s:.0f} s after Cancel",
            )
            child.proc.terminate()
            try:
                child.proc.wait(5)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
            self._settle(child)
            del self.children[child.run_id]

    def _settle(self, child: _Child, default_error: str | None = None) -> None:
        """After a child exits: a job it left ``running`` is ended here (cancelled or failed)."""
        run = queue.get_run(child.run_id, url=self.url)
        if run is None or RunStatus(run.status).finished:
            return
        if run.cancel_requested:
            queue.mark_cancelled(
                child.run_id,
                url=self.url,
                reason="cancelled by the user (it did not stop by itself, so it was terminated)",
            )
            return
        code = child.proc.returncode
        if default_error is None:
            if code is not None and code < 0:
                sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
                default_error = f"the job process was killed by {sig}" + (
                    " (out of memory?)" if sig == "SIGKILL" else ""
                )
            else:
                default_error = f"the job process exited with code {code} before finishing; see {job_dir(child.run_id) / 'job.log'}"
        queue.fail_run(child.run_id, default_error, url=self.url)

    def _write_state(self) -> None:
        if self._lock is None:
            return
        state = {
            "pid": os.getpid(),
            "worker_id": self.worker_id,
            "max_jobs": self.max_jobs,
            "started": self._started,
            "last_loop": time.time(),
            "running_jobs": sorted(self.children),
        }
        path = data_home() / STATE_NAME
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------
# one job, in its own process


def job_dir(run_id: int) -> Path:
    """Where a job writes its outputs and log: ``<data>/runs/<id>/``."""
    return data_home() / "runs" / str(run_id)


class RowReporter(Reporter):
    """A job's progress reporter: delivers stage, fraction and new log lines to the job's row.

    The one :class:`compressors.progress.Reporter` of a job: the executor's ``RunContext`` and
    ``compress_and_measure`` report straight into it, so each line reaches the row once. Writes are
    throttled (a new stage is written at once, the same stage at most every ``every_s``) so a compressor
    reporting per column does not hammer the database; lines wait for the next write or :meth:`flush`.
    """

    def __init__(
        self,
        run_id: int,
        url: str | None,
        cancel_event: threading.Event,
        every_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(cancel_event=cancel_event, clock=clock)
        self.run_id, self.url, self.every_s, self.clock = run_id, url, every_s, clock
        self._last_write = 0.0
        self._last_stage: str | None = None
        self._written = 0  # lines already in the row
        self._lock = threading.Lock()

    def _pending(self) -> str | None:
        new = self.lines[self._written :]
        self._written += len(new)
        return "\n".join(new) or None

    def deliver(self, stage: str, fraction: float, message: str, line: str | None) -> None:
        with self._lock:
            now = self.clock()
            # a count that moves ("measure after — 12/20 windows") is the same stage: throttled like it
            key = base_stage(stage)
            if key == self._last_stage and now - self._last_write < self.every_s:
                return
            lines = self._pending()
            self._last_stage, self._last_write = key, now
        if queue.update_progress(self.run_id, stage, fraction, lines, url=self.url):
            self.cancel_event.set()

    def flush(self) -> None:
        """Write the lines still waiting (before the job's final state is written)."""
        with self._lock:
            lines = self._pending()
        run = queue.get_run(self.run_id, url=self.url) if lines else None
        if run is not None:
            queue.update_progress(self.run_id, run.stage or "", run.fraction, lines, url=self.url)


def _watchdog(
    run_id: int, url: str | None, cancel_event: threading.Event, done: threading.Event, parent: int
) -> None:
    """Heartbeat + cancel poll once a second; exit the process if the pool that started it died."""
    while not done.wait(HEARTBEAT_S):
        if os.getppid() != parent:
            log.error("job #%s: the worker pool died; stopping (the next pool marks the job failed)", run_id)
            os._exit(3)
        try:
            if queue.heartbeat(run_id, url=url):
                cancel_event.set()
        except Exception:  # a locked database for a moment must not kill the job
            log.exception("heartbeat of job #%s failed", run_id)


def run_one(run_id: int, executor: str | None = None, url: str | None = None) -> int:
    """Execute one claimed job in this process and record its outcome; returns the exit code."""
    from compressors.base import Cancelled, CompressionError, RunContext

    run = queue.get_run(run_id, url=url)
    if run is None:
        log.error("no job #%s", run_id)
        return 2
    if RunStatus(run.status) is not RunStatus.RUNNING:
        log.error("job #%s is %s, not running; nothing to do", run_id, run.status)
        return 2
    cancel_event = threading.Event()
    done = threading.Event()
    progress = RowReporter(run_id, url, cancel_event)
    ctx = RunContext(progress=progress, cancel_event=cancel_event)
    threading.Thread(
        target=_watchdog, args=(run_id, url, cancel_event, done, os.getppid()), daemon=True
    ).start()
    out_dir = job_dir(run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        progress("starting", 0.0, f"job #{run_id}: {run.compressor} on {run.model_name}")
        result = load_executor(executor)(run, ctx, out_dir)
        if cancel_event.is_set():
            raise Cancelled("cancelled by the user")
        timings = dict(result.get("timings") or {})
        timings.setdefault("job_total_s", round(time.monotonic() - t0, 2))
        progress.flush()
        queue.finish_run(
            run_id,
            before_metrics=result.get("before_metrics") or {},
            after_metrics=result.get("after_metrics") or {},
            artifacts=result.get("artifacts"),
            samples=result.get("samples"),
            timings=timings,
            url=url,
        )
        log.info("job #%s succeeded in %.1f s", run_id, time.monotonic() - t0)
        return 0
    except Cancelled:
        progress.flush()
        queue.mark_cancelled(run_id, url=url)
        log.info("job #%s cancelled", run_id)
        return 0
    except CompressionError as exc:  # the user can fix it; the message says how
        progress.log(f"failed: {exc}")
        progress.flush()
        queue.fail_run(run_id, str(exc), url=url)
        return 1
    except MemoryError:
        progress.flush()
        queue.fail_run(
            run_id, "ran out of memory; try a smaller model or settings with a lower peak", url=url
        )
        return 1
    except Exception as exc:
        tb = traceback.format_exc()
        log.error("job #%s crashed:\n%s", run_id, tb)
        progress.log("crashed:\n" + "\n".join(tb.strip().splitlines()[-6:]))
        progress.flush()
        queue.fail_run(run_id, f"{type(exc).__name__}: {exc}", url=url)
        return 1
    finally:
        done.set()


# ---------------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobs.worker",
        description="Run Shrinkwise compression jobs from the database queue.",
    )
    parser.add_argument(
        "--run-one", type=int, metavar="ID", help="execute one claimed job (used by the pool)"
    )
    parser.add_argument("--executor", help="module:function that does one job (tests)")
    parser.add_argument(
        "--max-jobs", type=int, default=None, help=f"jobs at once (default ${ENV_MAX_JOBS} or 1)"
    )
    parser.add_argument(
        "--idle-exit", type=float, default=None, help="exit after this many seconds without jobs"
    )
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between queue checks")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"
    )
    if args.run_one is not None:
        dispose_engines()
        return run_one(args.run_one, args.executor)
    worker = Worker(
        max_jobs=args.max_jobs or max_jobs_setting(),
        executor=args.executor,
        poll_s=args.poll,
        idle_exit_s=args.idle_exit,
    )
    if not worker.start():
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info(
        "worker pool %s: up to %d job(s) at once, data in %s", worker.worker_id, worker.max_jobs, data_home()
    )
    worker.serve(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
