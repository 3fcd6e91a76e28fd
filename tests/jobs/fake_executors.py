"""Job executors for the runner tests: no torch, no model, just the behaviours the runner must handle
(progress, cooperative cancel, a job that ignores cancel, a crash, a killed process).

Each appends ``<run id>`` to the file named by ``$FAKE_JOB_LOG`` when it starts, so a test can count how
many times a job was executed.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _started(run) -> None:
    log = os.environ.get("FAKE_JOB_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{run.id}\n")


def _metrics(ppl: float, size: int) -> dict:
    return {
        "perplexity": ppl,
        "size_bytes": size,
        "bits_per_weight": 4.25 if size < 1000 else 32.0,
        "params": 1000,
        "sparsity": 0.0,
        "generation": "hello",
        "generation_prompt": "Say",
    }


def quick(run, ctx, out_dir: Path) -> dict:
    _started(run)
    for i in range(3):
        ctx.report(f"layer {i + 1}/3", (i + 1) / 3, f"layer {i + 1} done")
        time.sleep(0.05)
    (out_dir / "checkpoint").mkdir(exist_ok=True)
    (out_dir / "checkpoint" / "model.safetensors").write_bytes(b"x" * 100)
    return {
        "before_metrics": _metrics(10.0, 4000),
        "after_metrics": _metrics(10.5, 600),
        "artifacts": {"checkpoint": str(out_dir / "checkpoint")},
        "samples": {"prompt": "Say", "before": "hello", "after": "hello"},
        "timings": {"compress_s": 0.15},
    }


def slow(run, ctx, out_dir: Path) -> dict:
    """Reports and checks for cancel every 50 ms for up to a minute (a well-behaved compressor)."""
    _started(run)
    for i in range(1200):
        ctx.report("layer", i / 1200, f"step {i}" if i % 20 == 0 else "")
        time.sleep(0.05)
    return quick(run, ctx, out_dir)


def stubborn(run, ctx, out_dir: Path) -> dict:
    """Reports once, then sleeps without ever checking for cancel (a long native call)."""
    _started(run)
    ctx.report("native call", 0.1, "entering a long call that never checks for cancel")
    time.sleep(120)
    return quick(run, ctx, out_dir)


def crash(run, ctx, out_dir: Path) -> dict:
    _started(run)
    ctx.report("layer 1/3", 0.3, "layer 1 done")
    raise RuntimeError("boom in layer 2 (simulated crash)")


def die(run, ctx, out_dir: Path) -> dict:
    """The process is killed outright (as the kernel's out-of-memory killer would)."""
    _started(run)
    ctx.report("layer 1/3", 0.3, "about to be killed")
    os.kill(os.getpid(), signal.SIGKILL)
    return {}
