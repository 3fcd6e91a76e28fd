"""A sweep through a real Ray cluster on this machine (issue 14): a head and one worker node on
127.0.0.1, started and stopped by the test, run a sweep's children (real compression jobs) in parallel, a
cancel ends one child, and a child whose worker node is killed mid-run ends failed with the reason while
the others complete.

Placement is made deterministic with resources, not timing: the worker node has 1 CPU and a custom
resource ``doomed``; the job that must die asks for ``doomed`` (so it can only run there, and fills that
node's only CPU), and is running before any other job is sent, so every other job runs on the head.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip(
    "ray", reason="Ray is not installed: pip install '.[cluster]' for the cluster tests"
)

from jobs import queue  # noqa: E402
from jobs.backend import JobSpec, get_backend  # noqa: E402
from jobs.ray_backend import DIED_REASON, RayBackend, shutdown  # noqa: E402
from knowledge.tables import RunStatus  # noqa: E402
from tests.jobs.checkpoints import tiny_checkpoint  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
FAKE = "tests.jobs.fake_executors"
#: Small text budgets: the jobs are real compress-and-measure runs, on the tiny model.
TEXT = {
    "eval_windows": 2,
    "eval_seq_len": 64,
    "n_calib_samples": 4,
    "calib_seq_len": 64,
    "measure_speed": False,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _kill_session(sid: int) -> None:
    """SIGKILL every process of the session ``ray start`` made (raylet, its workers in their own process
    groups, the GCS...), never any other Ray on the machine."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getsid(pid) == sid:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _session_alive(sid: int) -> list[int]:
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid and "Z" not in _state(int(entry.name)):
                    alive.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


class Cluster:
    """A head and one worker node, each a ``ray start --block`` in its own session."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = str(ROOT) + (
            os.pathsep + self.env["PYTHONPATH"] if self.env.get("PYTHONPATH") else ""
        )
        self.env["RAY_USAGE_STATS_ENABLED"] = "0"
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}

    def _start(self, name: str, args: list[str]) -> None:
        common = [
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.tmp}",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
        ]
        with open(self.tmp / f"{name}.out", "wb") as out:
            self.nodes[name] = subprocess.Popen(
                [RAY, "start", *args, *common],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def start(self) -> None:
        self._start("head", ["--head", f"--port={self.port}", "--num-cpus=3", "--include-dashboard=false"])
        self._wait_nodes(1)
        self._start("worker", [f"--address={self.address}", "--num-cpus=1", '--resources={"doomed": 1}'])
        self._wait_nodes(2)

    def _wait_nodes(self, n: int, timeout: float = 120.0) -> None:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for name, proc in self.nodes.items():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"ray {name} exited: {(self.tmp / f'{name}.out').read_text()[-2000:]}"
                    )
            if ray.is_initialized() or self._try_connect():
                if sum(1 for node in ray.nodes() if node["Alive"]) >= n:
                    return
            time.sleep(0.5)
        raise AssertionError(f"{n} Ray node(s) not up in {timeout} s")

    def _try_connect(self) -> bool:
        try:
            ray.init(
                address=self.address, namespace="shrinkwise", log_to_driver=False, logging_level="WARNING"
            )
        except ConnectionError:
            return False
        return True

    def kill(self, name: str) -> None:
        _kill_session(self.nodes[name].pid)

    def stop(self) -> None:
        shutdown()
        for proc in self.nodes.values():
            _kill_session(proc.pid)
            proc.wait(30)
        for proc in self.nodes.values():
            t0 = time.monotonic()
            while _session_alive(proc.pid) and time.monotonic() - t0 < 10:
                time.sleep(0.2)


@pytest.fixture
def cluster(home, monkeypatch):
    tmp = Path(tempfile.mkdtemp(prefix="sw-ray-", dir="/tmp"))  # short: Ray's socket paths have a limit
    c = Cluster(tmp)
    monkeypatch.setenv("SHRINKWISE_RAY_ADDRESS", c.address)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        leftovers = [pid for proc in c.nodes.values() for pid in _session_alive(proc.pid)]
        shutil.rmtree(tmp, ignore_errors=True)
        assert not leftovers, f"Ray processes left behind: {leftovers}"


def _wait(what: str, until, timeout: float = 240.0) -> None:
    t0 = time.monotonic()
    while not until():
        if time.monotonic() - t0 > timeout:
            rows = {r.id: (r.status, r.stage, r.error) for r in queue.list_runs()}
            raise AssertionError(f"{what}: not reached in {timeout} s; jobs: {rows}")
        time.sleep(0.25)


def _row(job: int):
    return queue.get_run(job)


def test_a_sweep_runs_in_parallel_on_a_ray_cluster_cancel_and_a_dead_node_end_children(cluster, home):
    """A four-recipe sweep (jobs.sweeps) through the cluster: one child dies with its node, one is
    cancelled, two real runs complete in parallel, and the sweep's state is counted from them."""
    from jobs import sweeps

    model = str(tiny_checkpoint(home / "tiny"))
    backend = get_backend()  # chosen by SHRINKWISE_RAY_ADDRESS
    assert isinstance(backend, RayBackend)
    on_worker = RayBackend(executor=f"{FAKE}:stubborn", resources={"doomed": 1})
    slow = RayBackend(executor=f"{FAKE}:slow")

    class Router:
        """Sends each child to the backend its recipe needs; the doomed child must be running on the
        worker node before the next child is sent, so every other child runs on the head."""

        ids: dict[str, int] = {}

        def submit(self, spec: JobSpec) -> int:
            recipe = spec.recipe or ""
            runner = on_worker if recipe == "doomed" else slow if recipe == "to-cancel" else backend
            job = runner.submit(spec)
            self.ids[recipe] = job
            if recipe == "doomed":  # reports once, then a 2-minute call
                _wait("the doomed job reports progress", lambda: (_row(job).fraction or 0) > 0.01)
            return job

    def item(recipe: str, compressor: str, method: str, config: dict) -> sweeps.SweepItem:
        return sweeps.SweepItem(
            recipe=recipe, name=recipe, method=method, compressor=compressor, config=config
        )

    router = Router()
    sweep = sweeps.create_sweep(
        model_ref=model,
        model_name="tiny",
        items=[
            item("doomed", "rtn", "rtn", {"bits": 4}),
            item("to-cancel", "rtn", "rtn", {"bits": 8}),
            item("rtn-g32", "rtn", "rtn", {"bits": 4, "group_size": 32}),
            item("magnitude-50", "magnitude", "magnitude-pruning", {"sparsity": 0.5}),
        ],
        calibration=dict(TEXT),
        backend=router,  # type: ignore[arg-type]
    )
    doomed, cancelled = router.ids["doomed"], router.ids["to-cancel"]
    real = [router.ids["rtn-g32"], router.ids["magnitude-50"]]
    assert {j.id for j in sweeps.children(sweep)} == {doomed, cancelled, *real}  # all filed under the sweep
    assert _row(doomed).worker_id.startswith("ray:")
    _wait("the job to cancel reports progress", lambda: (_row(cancelled).fraction or 0) > 0.01)
    assert backend.cancel(cancelled) is RunStatus.RUNNING  # asked; it stops at its next step
    # 3. kill the worker node (raylet, its workers) while the doomed job runs there
    assert _row(doomed).status == RunStatus.RUNNING.value
    cluster.kill("worker")
    t_kill = time.monotonic()
    _wait("the doomed job ends", lambda: RunStatus(_row(doomed).status).finished, timeout=60)
    died_in = time.monotonic() - t_kill
    _wait("the other jobs end", lambda: all(RunStatus(_row(j).status).finished for j in [cancelled, *real]))

    dead = _row(doomed)
    assert dead.status == RunStatus.FAILED.value, (dead.status, dead.error)
    assert dead.error.startswith(DIED_REASON.split("{")[0]), dead.error
    assert died_in < 30, f"the dead node's job took {died_in:.0f} s to be failed"
    stopped = _row(cancelled)
    assert stopped.status == RunStatus.CANCELLED.value, (stopped.status, stopped.error)
    for job in real:
        row = _row(job)
        assert row.status == RunStatus.SUCCEEDED.value, (row.status, row.error, row.log_tail)
        assert row.worker_id.startswith("ray:") and "Ray task" in row.log_tail
        assert row.after_metrics.get("perplexity") and row.before_metrics.get("perplexity")
        # outputs are on the shared storage the app reads: the data folder's runs/<id>/
        for key in ("checkpoint_dir", "report_json"):
            assert Path(row.artifacts[key]).is_relative_to(home / "runs" / str(job)), row.artifacts
            assert Path(row.artifacts[key]).exists(), row.artifacts
    # the two real jobs ran at the same time on the head (1 CPU each, by their estimate)
    a, b = (_row(j) for j in real)
    assert a.started_at < b.finished_at and b.started_at < a.finished_at, "the jobs ran one after the other"
    assert json.dumps(a.timings)  # stored like a local job's
    status = sweeps.sweep_status(sweep)  # counted from the children
    assert status.finished and status.state == "partial", (status.state, status.counts)
    assert status.counts.get("succeeded") == 2 and status.counts.get("failed") == 1, status.counts
    assert status.counts.get("cancelled") == 1, status.counts
    points = sweeps.measured_points(sweep, sweeps.children(sweep))
    assert sorted(p.recipe for p in points) == ["magnitude-50", "rtn-g32"]  # the measured front's input
