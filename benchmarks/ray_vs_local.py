"""Wall time of the same small jobs through the local worker pool and through a local Ray cluster.

    PYTHONPATH=. .venv/bin/python benchmarks/ray_vs_local.py            # 4 jobs on the demo model
    PYTHONPATH=. .venv/bin/python benchmarks/ray_vs_local.py --model tiny --pool-jobs 1 2

Each backend gets a fresh data folder and SQLite database. The local pool is ``python -m jobs.worker``
with ``--max-jobs`` 1 (the default: one job uses every core) and, with ``--pool-jobs``, more; the Ray
cluster is a head without CPUs and one worker node with every core of this machine, started before the
clock starts (its start-up is printed apart). The clock runs from the first submit to the last job's
end, so it includes each job's process start (importing torch), as a user waits for it. Ray sizes each
task from the job's estimate (1 CPU for a run under a minute, so short jobs run side by side with one
thread each). Prints one row per set-up, and ``uptime``'s load before and after, since the machine may
be shared.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = [
    ("rtn", "rtn", {"bits": 4, "group_size": 64}),
    ("rtn", "rtn", {"bits": 8}),
    ("magnitude", "magnitude-pruning", {"sparsity": 0.5}),
    ("rtn", "rtn", {"bits": 3, "group_size": 32}),
]
TEXT = {
    "eval_windows": 4,
    "eval_seq_len": 128,
    "n_calib_samples": 4,
    "calib_seq_len": 128,
    "measure_speed": False,
}


def load() -> str:
    return os.getloadavg().__repr__()


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SHRINKWISE_HOME"] = str(home)
    env.pop("SHRINKWISE_DATABASE_URL", None)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _use_home(home: Path) -> None:
    from knowledge import db

    os.environ["SHRINKWISE_HOME"] = str(home)
    os.environ.pop("SHRINKWISE_DATABASE_URL", None)
    db.dispose_engines()
    db.init_db()


def _submit_and_wait(backend, model: str) -> tuple[float, list]:
    from jobs.backend import JobSpec

    t0 = time.monotonic()
    ids = [
        backend.submit(
            JobSpec(
                model_ref=model,
                method=m,
                compressor=c,
                config=cfg,
                model_name="bench",
                calibration=dict(TEXT),
            )
        )
        for c, m, cfg in RECIPES
    ]
    while True:
        infos = [backend.status(i) for i in ids]
        if all(i.finished for i in infos):
            return time.monotonic() - t0, infos
        time.sleep(0.5)


def run_local(model: str, max_jobs: int) -> tuple[float, list]:
    from jobs.backend import LocalBackend

    home = Path(tempfile.mkdtemp(prefix="sw-bench-local-"))
    _use_home(home)
    pool = subprocess.Popen(
        [sys.executable, "-m", "jobs.worker", "--max-jobs", str(max_jobs)],
        cwd=ROOT,
        env=_env(home),
        stdout=open(home / "pool.log", "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        return _submit_and_wait(LocalBackend(autostart=False), model)
    finally:
        pool.send_signal(signal.SIGTERM)
        pool.wait(60)


def _kill_session(sid: int) -> None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def run_ray(model: str) -> tuple[float, float, list]:
    import ray

    from jobs.ray_backend import RayBackend, shutdown

    home = Path(tempfile.mkdtemp(prefix="sw-bench-ray-"))
    _use_home(home)
    tmp = Path(tempfile.mkdtemp(prefix="sw-br-", dir="/tmp"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray_bin = str(Path(sys.executable).with_name("ray"))
    common = ["--block", "--node-ip-address=127.0.0.1", f"--temp-dir={tmp}", "--disable-usage-stats"]
    procs = []
    t0 = time.monotonic()
    try:
        for args in (
            ["--head", f"--port={port}", "--num-cpus=0", "--include-dashboard=false"],
            [f"--address=127.0.0.1:{port}", f"--num-cpus={os.cpu_count()}"],
        ):
            procs.append(
                subprocess.Popen(
                    [ray_bin, "start", *args, *common],
                    env=_env(home),
                    stdout=open(tmp / f"node{len(procs)}.log", "wb"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            want = len(procs)
            while True:
                try:
                    if not ray.is_initialized():
                        ray.init(address=f"127.0.0.1:{port}", logging_level="ERROR", log_to_driver=False)
                    if sum(1 for n in ray.nodes() if n["Alive"]) >= want:
                        break
                except ConnectionError:
                    pass
                time.sleep(0.5)
        startup = time.monotonic() - t0
        wall, infos = _submit_and_wait(RayBackend(address=f"127.0.0.1:{port}"), model)
        return startup, wall, infos
    finally:
        shutdown()
        for p in procs:
            _kill_session(p.pid)
            p.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--model", default="demo", help="demo, a model folder, or tiny (the tests' 2-layer Llama)"
    )
    ap.add_argument("--pool-jobs", type=int, nargs="+", default=[1], help="local pools' --max-jobs")
    ap.add_argument("--no-ray", action="store_true", help="only the local pool(s)")
    args = ap.parse_args()
    if args.model == "tiny":  # measures what the backends add around a job, not compression
        sys.path.insert(0, str(ROOT))
        from tests.jobs.checkpoints import tiny_checkpoint

        args.model = str(tiny_checkpoint(Path(tempfile.mkdtemp(prefix="sw-bench-tiny-")) / "tiny"))
    rows = []
    print(f"load before: {load()}", flush=True)
    for n in args.pool_jobs:
        wall, infos = run_local(args.model, n)
        rows.append((f"local pool, {n} job(s) at once", wall, None, infos))
        print(f"  local pool max_jobs={n}: {wall:.1f} s (load {load()})", flush=True)
    if not args.no_ray:
        startup, wall, infos = run_ray(args.model)
        rows.append((f"Ray: head + 1 worker ({os.cpu_count()} CPUs)", wall, startup, infos))
        print(f"  ray: {wall:.1f} s (+{startup:.1f} s cluster start) (load {load()})", flush=True)
    print(
        f"\n{len(RECIPES)} jobs on {args.model!r} (eval {TEXT['eval_windows']}x{TEXT['eval_seq_len']} tokens)"
    )
    print(f"{'set-up':40} {'wall s':>8} {'vs pool x1':>10} {'cluster start s':>16}  statuses / job_total_s")
    base = rows[0][1]
    for name, wall, startup, infos in rows:
        per = ", ".join(
            f"{i.status.value[:4]}/{i.timings.get('job_total_s', float('nan')):.0f}" for i in infos
        )
        st = f"{startup:.1f}" if startup is not None else "-"
        print(f"{name:40} {wall:8.1f} {base / wall:9.2f}x {st:>16}  {per}")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
