"""The job queue (issue 7): compression runs as rows, and what a succeeded one adds as measured evidence."""

from __future__ import annotations

import threading

import pytest

from jobs import queue
from knowledge import runs as evidence
from knowledge.schema import Metric, SourceTag
from knowledge.tables import RunStatus


@pytest.fixture(autouse=True)
def _fresh_database(home):
    """Every test starts on an empty SQLite database in its own data folder (``home``)."""
    return home


def _queue(n: int = 1, **kw):
    return [
        queue.create_run(
            model_ref="demo",
            model_name="SmolLM2-135M-Instruct",
            method=kw.get("method", "gptq"),
            compressor=kw.get("compressor", "gptq"),
            config={"bits": 4, "group_size": 64},
        )
        for _ in range(n)
    ]


def test_lifecycle_queued_running_succeeded_with_progress():
    (run,) = _queue()
    assert run.id is not None and run.status == "queued"
    claimed = queue.claim_next_run("worker-1")
    assert claimed.id == run.id and claimed.status == "running" and claimed.worker_id == "worker-1"
    assert claimed.started_at is not None and claimed.attempts == 1
    for i in range(50):
        assert queue.update_progress(run.id, f"layer {i}/50", i / 50, log_line=f"line {i}") is False
    got = queue.get_run(run.id)
    assert got.stage == "layer 49/50" and got.fraction == pytest.approx(0.98)
    assert got.log_tail.splitlines() == [f"line {i}" for i in range(10, 50)]  # the last 40 lines
    queue.finish_run(
        run.id,
        before_metrics={"perplexity": 10.05, "size_bytes": 538_000_000, "decode_tokens_per_s": 20.0},
        after_metrics={"perplexity": 10.9, "size_bytes": 95_000_000, "decode_tokens_per_s": 31.0},
        artifacts={"checkpoint": "/x/model"},
        timings={"compress": 12.5},
        machine="test box",
    )
    done = queue.get_run(run.id)
    assert done.status == "succeeded" and done.fraction == 1.0 and done.finished_at is not None
    assert done.elapsed_s is not None and done.elapsed_s >= 0
    assert queue.list_runs(status="succeeded")[0].id == run.id


def test_succeeded_run_becomes_measured_evidence():
    (run,) = _queue()
    queue.claim_next_run("w")
    queue.finish_run(
        run.id,
        before_metrics={"perplexity": 10.0, "size_mb": 500.0, "bits_per_weight": 16.0},
        after_metrics={"perplexity": 11.0, "size_mb": 100.0, "bits_per_weight": 4.25, "other": 1},
        machine="Xeon test box",
    )
    rows = evidence.measured_evidence(method="gptq")
    by_metric = {e.metric: e for e in rows}
    assert set(by_metric) == {Metric.PERPLEXITY, Metric.SIZE_MB, Metric.BITS_PER_WEIGHT}
    ppl = by_metric[Metric.PERPLEXITY]
    assert (ppl.value, ppl.baseline) == (11.0, 10.0) and ppl.relative_change == pytest.approx(0.1)
    assert ppl.source.tag is SourceTag.MEASURED and ppl.measured_here
    assert ppl.source.paper == f"Shrinkwise run #{run.id}"
    assert ppl.source.locator == "measured here on Xeon test box"
    assert ppl.model == "SmolLM2-135M-Instruct" and "bits=4" in ppl.setting and "group_size=64" in ppl.setting
    # recording again replaces, never duplicates
    assert evidence.record_measured_evidence(run.id) == 3
    assert len(evidence.measured_evidence(method="gptq")) == 3


def test_only_succeeded_runs_are_evidence():
    (run,) = _queue()
    with pytest.raises(ValueError, match="only succeeded runs are evidence"):
        evidence.evidence_from_run(queue.get_run(run.id))


def test_cancel_queued_is_immediate_and_running_is_requested():
    a, b = _queue(2)
    assert queue.request_cancel(a.id) is RunStatus.CANCELLED
    assert queue.get_run(a.id).status == "cancelled"
    claimed = queue.claim_next_run("w")
    assert claimed.id == b.id  # the cancelled job is never claimed
    assert queue.request_cancel(b.id) is RunStatus.RUNNING
    assert queue.update_progress(b.id, "layer 1", 0.1) is True
    queue.mark_cancelled(b.id)
    assert queue.get_run(b.id).status == "cancelled"
    assert queue.claim_next_run("w") is None


def test_failed_run_keeps_its_error():
    (run,) = _queue()
    queue.claim_next_run("w")
    queue.fail_run(run.id, "RuntimeError: out of memory in layer 3")
    got = queue.get_run(run.id)
    assert got.status == "failed" and "layer 3" in got.error
    assert evidence.measured_evidence() == []


def test_restart_marks_running_jobs_failed_and_keeps_queued_ones():
    a, b = _queue(2)
    queue.claim_next_run("dead-worker")
    assert queue.recover_interrupted() == [a.id]
    assert queue.get_run(a.id).status == "failed"
    assert "restarted" in queue.get_run(a.id).error
    assert queue.get_run(b.id).status == "queued"


def test_stale_heartbeat_only_fails_silent_jobs():
    a, b = _queue(2)
    queue.claim_next_run("w1")
    queue.claim_next_run("w2")
    assert queue.recover_interrupted(stale_after_s=3600) == []
    assert sorted(queue.recover_interrupted(stale_after_s=0)) == [a.id, b.id]


def test_concurrent_workers_never_claim_the_same_job():
    _queue(6)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            run = queue.claim_next_run(name)
            if run is None:
                return
            with lock:
                claimed.append(run.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == list(range(1, 7))


def test_list_runs_filters():
    _queue(2, method="gptq")
    _queue(1, method="rtn", compressor="rtn")
    assert [r.method for r in queue.list_runs(method="rtn")] == ["rtn"]
    assert len(queue.list_runs(status=["queued", "running"])) == 3
    assert [r.id for r in queue.list_runs(newest_first=False, limit=2)] == [1, 2]
    queue.delete_run(1)
    assert queue.get_run(1) is None


def test_diverged_metrics_are_stored_as_null_and_skipped_as_evidence():
    (run,) = _queue()
    queue.claim_next_run("w")
    queue.finish_run(
        run.id,
        before_metrics={"perplexity": 10.0, "size_mb": 500.0},
        after_metrics={"perplexity": float("inf"), "size_mb": 60.0},
    )
    got = queue.get_run(run.id)
    assert got.status == "succeeded" and got.after_metrics["perplexity"] is None
    assert [e.metric for e in evidence.measured_evidence()] == [Metric.SIZE_MB]


def test_queue_on_postgresql(postgres_url, monkeypatch):
    """Claims, cancel and restart recovery behave the same on PostgreSQL (several workers, one server)."""
    from sqlalchemy import text

    from knowledge import db

    monkeypatch.setenv(db.ENV_URL, postgres_url)
    with db.init_db().connect() as conn:
        conn.execute(text("TRUNCATE evidence, compression_run RESTART IDENTITY CASCADE"))
        conn.commit()
    ids = [r.id for r in _queue(8)]
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (run := queue.claim_next_run(name)) is not None:
            with lock:
                claimed.append(run.id)

    threads = [threading.Thread(target=worker, args=(f"pg{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ids
    assert queue.request_cancel(ids[0]) is RunStatus.RUNNING and queue.heartbeat(ids[0]) is True
    assert sorted(queue.recover_interrupted()) == ids
    # the one whose cancel was asked ends cancelled: its worker is gone, nobody else can stop it
    assert {r.id: r.status for r in queue.list_runs()} == {
        i: "cancelled" if i == ids[0] else "failed" for i in ids
    }


def test_one_recovery_for_the_pool_and_the_server(home):
    """A job of a dead process on this host is failed even with a fresh heartbeat; ``keep`` is spared."""
    import socket
    import subprocess
    import sys

    dead_job, mine, elsewhere = (r.id for r in _queue(3))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    queue.claim_next_run(f"{socket.gethostname()}:{dead.pid}:deadbeef")
    queue.claim_next_run(f"{socket.gethostname()}:{dead.pid}:deadbeef")
    queue.claim_next_run("another-machine:123:cafe")
    assert queue.recover_interrupted(stale_after_s=3600, keep=[mine]) == [dead_job]
    assert queue.get_run(dead_job).error == queue.RESTART_REASON
    assert {queue.get_run(i).status for i in (mine, elsewhere)} == {"running"}


def test_backend_factory_and_interface(monkeypatch):
    from jobs.backend import BACKENDS, ENV_BACKEND, JobBackend, LocalBackend, get_backend

    assert isinstance(get_backend(autostart=False), LocalBackend)
    assert isinstance(get_backend(autostart=False), JobBackend)
    monkeypatch.setenv(ENV_BACKEND, "slurm")
    with pytest.raises(ValueError, match="unknown job backend 'slurm'"):
        get_backend()
    monkeypatch.setitem(BACKENDS, "slurm", LocalBackend)  # what another backend does to register
    assert isinstance(get_backend(autostart=False), LocalBackend)
    (run,) = _queue()
    queue.claim_next_run("w")
    assert LocalBackend(autostart=False).recover(stale_after_s=0) == [run.id]
