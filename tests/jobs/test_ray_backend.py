"""The Ray backend's pieces that need no cluster: which backend the settings choose, jobs reserved for a
Ray task stay out of the local pool, a task's resources come from the job's own estimate, and a missing
Ray is said before anything is queued. The cluster itself: tests/jobs/test_ray_cluster.py."""

from __future__ import annotations

import sys

import pytest

from jobs import queue
from jobs.backend import JobSpec, LocalBackend, get_backend
from jobs.ray_backend import PROCESS_OVERHEAD_BYTES, RayBackend, RayUnavailable, task_resources
from knowledge.tables import RunStatus
from tests.jobs.checkpoints import tiny_checkpoint


def test_the_ray_address_chooses_the_ray_backend_and_the_default_stays_local(home, monkeypatch):
    monkeypatch.delenv("SHRINKWISE_JOB_BACKEND", raising=False)
    monkeypatch.delenv("SHRINKWISE_RAY_ADDRESS", raising=False)
    assert type(get_backend()) is LocalBackend
    monkeypatch.setenv("SHRINKWISE_RAY_ADDRESS", "10.0.0.5:6379")
    chosen = get_backend()
    assert isinstance(chosen, RayBackend) and chosen.address == "10.0.0.5:6379"
    monkeypatch.setenv("SHRINKWISE_JOB_BACKEND", "local")  # an explicit choice wins
    assert type(get_backend()) is LocalBackend
    monkeypatch.setenv("SHRINKWISE_JOB_BACKEND", "ray")
    assert isinstance(get_backend(), RayBackend)


def test_a_job_reserved_for_a_ray_task_is_left_to_it(home):
    ray_job, local_job = (
        queue.create_run(model_ref="demo", model_name="tiny", method="rtn", compressor="rtn").stored_id
        for _ in range(2)
    )
    assert queue.reserve_run(ray_job, "ray:abc")
    claimed = queue.claim_next_run("host:1:pool")
    assert claimed is not None and claimed.id == local_job  # the older job is the Ray task's
    assert queue.claim_next_run("host:1:pool") is None
    got = queue.claim_run(ray_job, "ray:abc")
    assert got is not None and got.status == RunStatus.RUNNING.value and got.worker_id == "ray:abc"
    assert queue.claim_run(ray_job, "ray:def") is None  # a second task of a re-sent job does nothing
    assert not queue.reserve_run(ray_job, "ray:def")  # nor can it be re-reserved once running


class _Run:
    def __init__(self, model_ref: str, compressor: str, config: dict, calibration: dict | None = None):
        self.id, self.model_ref, self.compressor, self.config = 1, model_ref, compressor, config
        self.calibration = calibration or {"n_calib_samples": 4, "calib_seq_len": 64}


def test_a_tasks_resources_come_from_the_jobs_cost_estimate(home, monkeypatch):
    from jobs import preflight

    model = str(tiny_checkpoint(home / "tiny"))
    info = preflight.check_model(model)
    monkeypatch.delenv("SHRINKWISE_RAY_JOB_CPUS", raising=False)
    monkeypatch.delenv("SHRINKWISE_RAY_JOB_GPUS", raising=False)
    run = _Run(model, "rtn", {"bits": 4})
    est = preflight.estimate_cost("rtn", info, {"bits": 4}, preflight.Calibration(4, 64)).estimate
    res = task_resources(run, model_info=info)
    assert res.memory_bytes == est.peak_memory_bytes + PROCESS_OVERHEAD_BYTES
    assert res.num_cpus == 1 and res.num_gpus == 0  # a run of seconds; no GPU in the cluster
    assert res.options() == {"num_cpus": 1.0, "num_gpus": 0.0, "memory": res.memory_bytes}
    # RTN on a safetensors folder streams its blocks through the device: it asks for a GPU when there is one
    assert task_resources(run, model_info=info, cluster_gpus=2).num_gpus == 1
    monkeypatch.setenv("SHRINKWISE_RAY_JOB_CPUS", "6")
    monkeypatch.setenv("SHRINKWISE_RAY_JOB_GPUS", "0.5")
    res = task_resources(run, model_info=info, custom={"shrinkwise": 1})
    assert (res.num_cpus, res.num_gpus) == (6, 0.5)
    assert res.options()["resources"] == {"shrinkwise": 1.0}
    # a model that cannot be read is sized at 1 CPU; the job itself says why the model is refused
    monkeypatch.delenv("SHRINKWISE_RAY_JOB_CPUS")
    bad = task_resources(_Run(str(home / "missing"), "rtn", {"bits": 4}))
    assert bad.num_cpus == 1 and bad.memory_bytes == 0 and "no estimate" in bad.basis


def test_without_ray_the_ray_backend_says_what_to_install_and_queues_nothing(home, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    backend = RayBackend(address="127.0.0.1:1")
    spec = JobSpec(model_ref="demo", method="rtn", compressor="rtn", config={"bits": 4})
    with pytest.raises(RayUnavailable, match=r"shrinkwise\[cluster\]"):
        backend.submit(spec)
    assert queue.list_runs() == []


class _FakeRay:
    """What the watcher uses of ``ray``: ``get`` (raising the task's error) and ``exceptions``."""

    class exceptions:  # mirrors ray.exceptions
        class TaskCancelledError(Exception):
            pass

        class NodeDiedError(Exception):
            pass

    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, ref, timeout=None):
        if self.error is not None:
            raise self.error
        return 0


def _settle(monkeypatch, job: int, task_id: str, error: Exception | None):
    from jobs import ray_backend

    monkeypatch.setitem(sys.modules, "ray", _FakeRay(error))
    ray_backend._Tracker()._settle(ray_backend._Task(job, object(), None, task_id))
    return queue.get_run(job)


def test_the_watcher_ends_a_job_whose_task_died_with_the_reason_and_only_its_own(home, monkeypatch):
    from jobs.ray_backend import DIED_REASON, NOT_STARTED_REASON

    died = _FakeRay.exceptions.NodeDiedError(
        "Task failed because the node it was running on is dead or unavailable. Node IP: 10.0.0.7. Advice..."
    )
    a, b, c, d = (
        queue.create_run(model_ref="demo", model_name="tiny", method="rtn", compressor="rtn").stored_id
        for _ in range(4)
    )
    queue.reserve_run(a, "ray:t-a")
    queue.claim_run(a, "ray:t-a")
    row = _settle(monkeypatch, a, "t-a", died)
    assert row.status == RunStatus.FAILED.value
    assert row.error == DIED_REASON.format(
        detail="NodeDiedError: Task failed because the node it was running on is dead or unavailable."
    )
    # a job sent again, claimed by the other task: the first task's end does not touch it
    queue.claim_run(b, "ray:t-other")
    assert _settle(monkeypatch, b, "t-b", None).status == RunStatus.RUNNING.value
    # a task that failed before it claimed its job
    queue.reserve_run(c, "ray:t-c")
    row = _settle(monkeypatch, c, "t-c", died)
    assert row.status == RunStatus.FAILED.value and row.error.startswith(NOT_STARTED_REASON.split("{")[0])
    # the user asked to stop it and the task was cancelled: cancelled, not failed
    queue.claim_run(d, "ray:t-d")
    queue.request_cancel(d)
    row = _settle(monkeypatch, d, "t-d", _FakeRay.exceptions.TaskCancelledError("cancelled"))
    assert row.status == RunStatus.CANCELLED.value
