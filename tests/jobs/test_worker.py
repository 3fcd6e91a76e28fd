"""The job runner: a job runs once to the end, Cancel stops it within seconds, a restart fails what was
running and continues what was queued, two pools never run the same job, a crash is recorded."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from jobs import queue
from jobs.backend import JobSpec, LocalBackend
from jobs.queue import RESTART_REASON
from jobs.worker import Worker, ensure_worker, job_dir, pool_running
from knowledge import runs as knowledge_runs
from knowledge.tables import RunStatus
from tests.jobs.conftest import executed

FAKE = "tests.jobs.fake_executors"


def enqueue(n: int = 1, model_ref: str = "demo") -> list[int]:
    return [
        int(
            queue.create_run(
                model_ref=model_ref, model_name="tiny", method="gptq", compressor="gptq", config={"bits": 4}
            ).id
        )
        for _ in range(n)
    ]


def drive(*workers: Worker, until, timeout: float = 60.0) -> float:
    """Tick the workers until ``until()`` is true; returns the seconds it took."""
    t0 = time.monotonic()
    while not until():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(
                f"condition not reached in {timeout} s: {[r.status for r in queue.list_runs()]}"
            )
        for w in workers:
            w.tick()
        time.sleep(0.1)
    return time.monotonic() - t0


def status(run_id: int) -> RunStatus:
    return RunStatus(queue.get_run(run_id).status)


def test_job_runs_to_success_records_progress_and_becomes_evidence(home):
    (job,) = enqueue()
    w = Worker(executor=f"{FAKE}:quick", max_jobs=1)
    assert w.start()
    try:
        drive(w, until=lambda: status(job).finished)
    finally:
        w.stop()
    run = queue.get_run(job)
    assert run.status == "succeeded", run.error
    assert run.after_metrics["perplexity"] == 10.5 and run.before_metrics["size_bytes"] == 4000
    assert run.fraction == 1.0 and "layer 3 done" in run.log_tail
    assert run.artifacts["checkpoint"].endswith("checkpoint")
    assert run.timings["job_total_s"] > 0
    assert executed(home) == [job]
    ev = knowledge_runs.measured_evidence(method="gptq", model="tiny")
    ppl = [e for e in ev if e.metric.value == "perplexity"]
    assert ppl and ppl[0].value == 10.5 and ppl[0].baseline == 10.0


def test_cancel_stops_a_running_job_within_seconds(home):
    (job,) = enqueue()
    w = Worker(executor=f"{FAKE}:slow", max_jobs=1)
    assert w.start()
    try:
        drive(w, until=lambda: (queue.get_run(job).fraction or 0) > 0.01)
        assert status(job) is RunStatus.RUNNING
        assert LocalBackend(autostart=False).cancel(job) is RunStatus.RUNNING  # asked, not yet stopped
        took = drive(w, until=lambda: status(job).finished, timeout=20)
    finally:
        w.stop()
    assert status(job) is RunStatus.CANCELLED
    print(f"cooperative cancel took {took:.2f} s")
    assert took < 5.0, f"cancel took {took:.1f} s"
    assert not w.children


def test_cancel_terminates_a_job_that_ignores_it(home):
    (job,) = enqueue()
    w = Worker(executor=f"{FAKE}:stubborn", max_jobs=1, cancel_grace_s=1.0)
    assert w.start()
    try:
        drive(w, until=lambda: queue.get_run(job).stage == "native call")
        queue.request_cancel(job)
        took = drive(w, until=lambda: status(job).finished, timeout=20)
    finally:
        w.stop()
    run = queue.get_run(job)
    assert run.status == "cancelled" and "terminated" in run.error
    print(f"cancel of a stuck job took {took:.2f} s")
    assert took < 8.0


def test_cancel_of_a_queued_job_is_immediate_and_it_never_runs(home):
    first, second = enqueue(2)
    assert LocalBackend(autostart=False).cancel(second) is RunStatus.CANCELLED
    w = Worker(executor=f"{FAKE}:quick", max_jobs=2)
    assert w.start()
    try:
        drive(w, until=lambda: status(first).finished)
    finally:
        w.stop()
    assert executed(home) == [first]
    assert status(second) is RunStatus.CANCELLED


def test_restart_fails_the_job_that_was_running_and_continues_the_queued_one(home):
    interrupted, other_host_fresh, waiting = enqueue(3)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that existed and is gone: the crashed pool
    assert queue.claim_next_run(f"{__import__('socket').gethostname()}:{dead.pid}:deadbeef").id == interrupted
    assert queue.claim_next_run("another-machine:123:cafe").id == other_host_fresh  # alive elsewhere, beating
    w = Worker(executor=f"{FAKE}:quick", max_jobs=1)
    assert w.start()  # recovery happens here
    try:
        run = queue.get_run(interrupted)
        assert run.status == "failed" and run.error == RESTART_REASON
        assert status(other_host_fresh) is RunStatus.RUNNING  # fresh heartbeat from another pool: left alone
        drive(w, until=lambda: status(waiting).finished)
    finally:
        w.stop()
    assert status(waiting) is RunStatus.SUCCEEDED
    assert executed(home) == [waiting]


def test_stale_heartbeat_from_another_machine_is_failed(home):
    (job,) = enqueue()
    queue.claim_next_run("another-machine:123:cafe")
    w = Worker(executor=f"{FAKE}:quick", stale_after_s=0.0, use_lock=False)
    time.sleep(0.05)
    assert queue.recover_interrupted(stale_after_s=w.stale_after_s, keep=w.children) == [job]
    assert queue.get_run(job).error == RESTART_REASON


def test_two_pools_on_one_database_run_each_job_exactly_once(home):
    jobs = enqueue(5)
    a = Worker(executor=f"{FAKE}:quick", max_jobs=2, use_lock=False)
    b = Worker(executor=f"{FAKE}:quick", max_jobs=2, use_lock=False)
    try:
        drive(a, b, until=lambda: all(status(j).finished for j in jobs), timeout=120)
    finally:
        a.stop()
        b.stop()
    assert sorted(executed(home)) == jobs
    assert {queue.get_run(j).status for j in jobs} == {"succeeded"}
    assert len({queue.get_run(j).worker_id for j in jobs}) == 2  # both pools did work


def test_concurrent_claims_hand_out_each_job_once(home):
    jobs = enqueue(4)
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(i: int) -> None:
        while (run := queue.claim_next_run(f"host:{i}:t")) is not None:
            with lock:
                claimed.append(int(run.id))

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == jobs


def test_max_jobs_limits_how_many_run_at_once(home):
    first, second = enqueue(2)
    w = Worker(executor=f"{FAKE}:slow", max_jobs=1)
    assert w.start()
    try:
        drive(w, until=lambda: status(first) is RunStatus.RUNNING)
        for _ in range(5):
            w.tick()
            time.sleep(0.1)
        assert status(second) is RunStatus.QUEUED and len(w.children) == 1
        queue.request_cancel(first)
        drive(w, until=lambda: status(second) is RunStatus.RUNNING, timeout=20)
        queue.request_cancel(second)
        drive(w, until=lambda: status(second).finished, timeout=20)
    finally:
        w.stop()


def test_a_crash_fails_the_job_with_its_error_and_keeps_the_upload(home):
    upload = home / "uploads" / "u1" / "model"
    upload.mkdir(parents=True)
    (upload / "config.json").write_text("{}")
    (job,) = enqueue(model_ref=str(upload))
    w = Worker(executor=f"{FAKE}:crash", max_jobs=1)
    assert w.start()
    try:
        drive(w, until=lambda: status(job).finished)
    finally:
        w.stop()
    run = queue.get_run(job)
    assert run.status == "failed"
    assert run.error == "RuntimeError: boom in layer 2 (simulated crash)"
    assert "boom in layer 2" in run.log_tail
    assert (upload / "config.json").is_file()


def test_a_killed_job_process_is_failed_with_the_signal(home):
    (job,) = enqueue()
    w = Worker(executor=f"{FAKE}:die", max_jobs=1)
    assert w.start()
    try:
        drive(w, until=lambda: status(job).finished)
    finally:
        w.stop()
    run = queue.get_run(job)
    assert run.status == "failed" and "SIGKILL" in run.error
    assert (job_dir(job) / "job.log").is_file()


def test_only_one_pool_per_data_folder(home):
    w = Worker(executor=f"{FAKE}:quick")
    assert w.start()
    try:
        assert pool_running()
        assert not Worker(executor=f"{FAKE}:quick").start()
        assert ensure_worker() is False  # a pool is running: nothing started
    finally:
        w.stop()
    assert not pool_running()


def test_settings_the_compressor_rejects_are_refused_before_queueing(home):
    from compressors.base import ConfigError

    runner = LocalBackend(autostart=False)
    with pytest.raises(ConfigError, match=r"bits=5 .*\[2, 3, 4, 8\]"):
        runner.submit(JobSpec(model_ref="demo", method="gptq", compressor="gptq", config={"bits": 5}))
    assert runner.list() == []
    job = runner.submit(JobSpec(model_ref="demo", method="gptq", compressor="gptq", config={"bits": 3}))
    info = runner.status(job)
    assert info.status is RunStatus.QUEUED and info.config["bits"] == 3 and info.config["group_size"] == 128


def test_a_method_the_compressor_does_not_implement_is_refused_before_queueing(home):
    """The run is filed under its method: a compressor id or another method's id there is refused."""
    from compressors.base import CompressionError

    runner = LocalBackend(autostart=False)
    with pytest.raises(CompressionError, match=r"'magnitude' does not implement the method 'magnitude'"):
        runner.submit(JobSpec(model_ref="demo", method="magnitude", compressor="magnitude"))
    with pytest.raises(CompressionError, match=r"'gptq' is run by \['gptq'\]"):
        runner.submit(JobSpec(model_ref="demo", method="gptq", compressor="rtn"))
    assert runner.list() == []
    job = runner.submit(JobSpec(model_ref="demo", method="dynamic-int8", compressor="cpu-inference"))
    info = runner.status(job)
    assert (info.method, info.compressor) == ("dynamic-int8", "cpu-inference")


def test_on_demand_pool_runs_queued_jobs_then_exits_when_idle(home, monkeypatch):
    """What the app does after a restart: jobs are queued, no pool runs, ensure_worker starts the real
    ``python -m jobs.worker`` process, which runs them and exits once idle."""
    monkeypatch.setenv("SHRINKWISE_JOB_EXECUTOR", f"{FAKE}:quick")
    jobs = enqueue(2)
    assert not pool_running()
    assert ensure_worker(idle_exit_s=2.0) is True
    t0 = time.monotonic()
    while not all(status(j).finished for j in jobs):
        assert time.monotonic() - t0 < 90, [status(j) for j in jobs]
        time.sleep(0.3)
    assert [status(j) for j in jobs] == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED]
    while pool_running():
        assert time.monotonic() - t0 < 120, "the idle pool did not exit"
        time.sleep(0.3)
    assert "no jobs for 2 s" in (home / "worker.log").read_text()
