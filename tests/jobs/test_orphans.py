"""Issue 15, finding 4: a job whose worker pool was killed never stays "running". A page visit (or a
pool start) reconciles it even when nothing is queued, and Cancel of such an orphan completes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from jobs import queue
from jobs.backend import LocalBackend, reconcile
from knowledge.tables import RunStatus

ROOT = str(Path(__file__).resolve().parents[2])


def _enqueue() -> int:
    run = queue.create_run(model_ref="demo", model_name="tiny", method="gptq", compressor="gptq")
    return int(run.stored_id)


def _start_pool() -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=ROOT, SHRINKWISE_JOB_EXECUTOR="tests.jobs.fake_executors:slow")
    return subprocess.Popen(
        [sys.executable, "-m", "jobs.worker", "--poll", "0.1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_pool_mid_job(job: int) -> None:
    """Start a real pool, wait until the slow job reports progress, then SIGKILL the pool."""
    pool = _start_pool()
    try:
        t0 = time.monotonic()
        while (queue.get_run(job).fraction or 0) <= 0.0:
            assert pool.poll() is None, "the worker pool exited"
            assert time.monotonic() - t0 < 120, "the job never started"
            time.sleep(0.2)
    finally:
        pool.send_signal(signal.SIGKILL)
        pool.wait()
    assert queue.get_run(job).status == RunStatus.RUNNING.value  # what the issue saw: left running


def test_a_visit_fails_the_job_of_a_killed_pool_even_with_nothing_queued(home):
    job = _enqueue()
    _kill_pool_mid_job(job)
    assert queue.list_runs(status=RunStatus.QUEUED) == []
    # the page's visit (autostart off: nothing queued, and no pool may be started by the test)
    assert reconcile(LocalBackend(autostart=False), start_worker=False) == [job]
    run = queue.get_run(job)
    assert run.status == "failed" and run.error == queue.RESTART_REASON


def test_cancel_of_an_orphaned_job_completes(home):
    job = _enqueue()
    _kill_pool_mid_job(job)
    assert LocalBackend(autostart=False).cancel(job) is RunStatus.CANCELLED
    run = queue.get_run(job)
    assert run.status == "cancelled" and run.error == queue.ORPHAN_CANCEL_REASON


def test_a_requested_cancel_whose_worker_stopped_ends_cancelled(home):
    """Cancel was asked while the worker (on another machine) still beat; then it went silent."""
    job = _enqueue()
    queue.claim_next_run("another-machine:123:cafe")
    assert queue.request_cancel(job) is RunStatus.RUNNING  # fresh heartbeat: asked, not yet stopped
    time.sleep(0.05)
    assert queue.recover_interrupted(stale_after_s=0.0) == [job]
    assert queue.get_run(job).status == "cancelled"


def test_cancel_of_a_silent_job_elsewhere_completes(home):
    job = _enqueue()
    queue.claim_next_run("another-machine:123:cafe")
    time.sleep(0.05)
    assert queue.request_cancel(job, stale_after_s=0.0) is RunStatus.CANCELLED
