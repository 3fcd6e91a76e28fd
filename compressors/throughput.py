"""This machine's throughput, measured once by a short probe and cached: the divisor of every time estimate.

Why: the compressors' ``estimate`` used to divide operation counts by constants fitted on one loaded
development VM (and rescaled by a factor from one idle run), so they were wrong on any other machine and
on a GPU. Now the estimates count *operations* (:class:`Work`: matmul FLOPs, factorization FLOPs, bytes
moved, small torch ops) and divide each kind by the rate this probe measured on the device the run uses.

The probe (about half a second on a CPU) times, each for a fixed time budget and taking the best repetition:

* a square float32 matmul and the same in bfloat16 (512 on a CPU, 4096 on a GPU: the size of the
  calibration matmuls of a small model, and large enough to reach a GPU's throughput);
* Cholesky, inverse and Cholesky of a float32 SPD matrix (GPTQ's and SparseGPT's inverse Hessians);
* a copy of a tensor larger than the CPU's caches (memory bandwidth: element-wise passes over weights,
  as in RTN and packing);
* a loop of tiny in-place adds (the fixed cost of one torch op: GPTQ's column loop is made of them).

On CUDA every timing ends in ``torch.cuda.synchronize``. The result is cached as JSON under
``<cache_dir>/throughput/<hash>.json`` (:func:`compressors.demo.cache_dir`: ``$SHRINKWISE_CACHE`` or the
platform's user cache), keyed by :func:`machine_key` (host, CPU model and count, device and GPU name,
torch and CUDA versions, torch's thread count), so a change of any of them re-runs the probe. The load
of the machine at probe time is not part of the key but is recorded, and a probe taken while the machine
was oversubscribed (1-minute load average above the CPU count: on the 2-core development VM shared by
other jobs the fp32 matmul rate then fell from ~200 to ~10 GFLOP/s) is kept in memory only, so a later
process measures again; ``python -m compressors.throughput --refresh`` re-measures on demand.

``$SHRINKWISE_THROUGHPUT`` (a JSON object of :class:`Throughput` rates) pins the rates instead of
probing: the test suite uses it so estimates are deterministic and no test spends CPU on a probe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

ENV_PIN = "SHRINKWISE_THROUGHPUT"
PROBE_VERSION = 1  # bump when the probe measures differently: old cache files are then ignored
_RATE_FIELDS = ("matmul_fp32", "matmul_bf16", "factor_fp32", "bandwidth", "op_overhead_s")


@dataclass(frozen=True)
class Throughput:
    """Measured rates of one device. FLOP/s count a multiply-add as 2 FLOPs; bandwidth counts bytes
    read plus bytes written; ``op_overhead_s`` is the wall time of one tiny torch op (dispatch)."""

    matmul_fp32: float
    matmul_bf16: float
    factor_fp32: float
    bandwidth: float
    op_overhead_s: float
    device: str = "cpu"
    source: str = ""  # where these numbers came from, for the estimate's note

    def matmul(self, dtype_bytes: int = 4) -> float:
        """The matmul rate for weights of ``dtype_bytes`` (2: bfloat16/float16, else float32)."""
        return self.matmul_bf16 if dtype_bytes == 2 else self.matmul_fp32

    def describe(self) -> str:
        """The rates and their source, plus a warning when the machine is oversubscribed right now (the
        rates describe it when it is not; a run competing for cores takes longer)."""
        busy = busy_warning()
        return (
            f"{self.matmul_fp32 / 1e9:,.0f} GFLOP/s fp32, {self.matmul_bf16 / 1e9:,.0f} GFLOP/s bf16, "
            f"{self.bandwidth / 1e9:,.1f} GB/s on {self.device}; {self.source}"
            + (f"; {busy}" if busy else "")
        )


@dataclass(frozen=True)
class Work:
    """Operation counts of a run (or a stage of one), by the kind of rate that bounds them."""

    matmul_flops: float = 0.0  # dense matmuls in float32 (Hessians, calibration forward passes)
    matmul_flops_half: float = 0.0  # dense matmuls in bfloat16/float16
    factor_flops: float = 0.0  # Cholesky / triangular inverse
    bytes_moved: float = 0.0  # element-wise passes: bytes read + written
    small_ops: float = 0.0  # tiny torch ops whose cost is the dispatch, not the data

    def __add__(self, other: Work) -> Work:
        return Work(*(a + b for a, b in zip(_astuple(self), _astuple(other), strict=True)))

    def __mul__(self, k: float) -> Work:
        return Work(*(a * k for a in _astuple(self)))

    __rmul__ = __mul__

    def seconds(self, tp: Throughput) -> float:
        """Each kind of operation divided by its measured rate, summed (no overlap assumed)."""
        return (
            self.matmul_flops / tp.matmul_fp32
            + self.matmul_flops_half / tp.matmul_bf16
            + self.factor_flops / tp.factor_fp32
            + self.bytes_moved / tp.bandwidth
            + self.small_ops * tp.op_overhead_s
        )


def _astuple(w: Work) -> tuple[float, ...]:
    return (w.matmul_flops, w.matmul_flops_half, w.factor_flops, w.bytes_moved, w.small_ops)


def forward_work(n_params: float, tokens: float, dtype_bytes: int = 4) -> Work:
    """Forward passes over ``tokens`` tokens: ``2 · params · tokens`` FLOPs in the weights' dtype."""
    flops = 2.0 * n_params * tokens
    return Work(matmul_flops_half=flops) if dtype_bytes == 2 else Work(matmul_flops=flops)


# --- the probe --------------------------------------------------------------------------------------


def run_device() -> str:
    """The device a run uses: :class:`compressors.base.RunContext`'s default (the runner sets no other)."""
    from compressors.base import RunContext

    return str(RunContext.__dataclass_fields__["device"].default)


def machine_load() -> float | None:
    """The 1-minute load average per CPU (above 1: runnable work waits for a core), None where unknown."""
    try:
        return os.getloadavg()[0] / max(os.cpu_count() or 1, 1)
    except (AttributeError, OSError):
        return None


def busy_warning() -> str:
    """A sentence for an estimate's note when the machine is oversubscribed right now, else ''."""
    load = machine_load()
    if load is None or load <= 1.0:
        return ""
    return f"the machine is busy now (load {load:.1f} per CPU): expect the run to take longer"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(device: str) -> dict[str, Any]:
    """What the probe's result depends on; any change re-runs the probe."""
    dev = torch.device(device)
    key: dict[str, Any] = {
        "probe": PROBE_VERSION,
        "host": platform.node(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "device": dev.type,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        key.update(gpu=torch.cuda.get_device_name(index), gpu_index=index, cuda=torch.version.cuda)
    return key


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def cache_path(key: dict[str, Any]) -> Path:
    from compressors.demo import cache_dir

    return cache_dir() / "throughput" / f"{key_hash(key)}.json"


def _best_seconds(fn: Callable[[], object], sync: Callable[[], None], budget_s: float) -> float:
    """Shortest wall time of ``fn`` after one warm-up, repeated until ``budget_s`` is spent (1-50 times).

    The best, not the median: on a shared machine the median of a 0.1 s probe swings tenfold with
    whatever else runs at that moment (seen on the 2-core development VM), while the best repetition
    is close to what the machine can do and stays put, and it is cached for good."""
    fn()
    sync()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while not times or (time.perf_counter() < end and len(times) < 50):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(device: str, budget_s: float = 0.08) -> dict[str, float]:
    """Run the probe on ``device`` (a few tenths of a second on a CPU); returns the rates."""
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    sync: Callable[[], None] = (lambda: torch.cuda.synchronize(dev)) if gpu else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)
    n = 4096 if gpu else 512
    a = torch.randn(n, n, generator=gen).to(dev)
    b = torch.randn(n, n, generator=gen).to(dev)
    rates: dict[str, float] = {}
    rates["matmul_fp32"] = 2 * n**3 / _best_seconds(lambda: a @ b, sync, budget_s)
    ah, bh = a.to(torch.bfloat16), b.to(torch.bfloat16)
    rates["matmul_bf16"] = 2 * n**3 / _best_seconds(lambda: ah @ bh, sync, budget_s)
    m = 2048 if gpu else 512
    x = torch.randn(m, m, generator=gen).to(dev)
    spd = x @ x.T + m * torch.eye(m, device=dev)

    def factor() -> None:  # the sequence of compressors.ops.hessian.inverse_cholesky_upper: 4/3 m³ FLOPs
        low, _ = torch.linalg.cholesky_ex(spd)
        torch.linalg.cholesky_ex(torch.cholesky_inverse(low), upper=True)

    rates["factor_fp32"] = (4 * m**3 / 3) / _best_seconds(factor, sync, budget_s)
    elems = (256 if gpu else 32) * 2**20  # 128 MB on a CPU: beyond any L3, as a model's weights are
    src, dst = torch.ones(elems, device=dev), torch.empty(elems, device=dev)
    rates["bandwidth"] = 2 * 4 * elems / _best_seconds(lambda: dst.copy_(src), sync, budget_s)
    tiny = torch.zeros(16, device=dev)
    reps = 200

    def small_ops() -> None:
        for _ in range(reps):
            tiny.add_(1.0)

    rates["op_overhead_s"] = _best_seconds(small_ops, sync, budget_s) / reps
    return rates


# --- cache ------------------------------------------------------------------------------------------

_memo: dict[str, Throughput] = {}
_lock = threading.Lock()
_probe: Callable[[str], dict[str, float]] = measure  # replaced in tests to count probe runs


def _pinned(device: str) -> Throughput | None:
    raw = os.environ.get(ENV_PIN)
    if not raw:
        return None
    rates = json.loads(raw)
    missing = [f for f in _RATE_FIELDS if f not in rates]
    if missing:
        raise ValueError(f"${ENV_PIN} must give every rate; missing {missing}")
    return Throughput(
        **{f: float(rates[f]) for f in _RATE_FIELDS}, device=device, source=f"pinned by ${ENV_PIN}"
    )


def _read(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None  # another machine's file under a colliding name, or an older probe
    return data


def get_throughput(device: str | None = None, *, refresh: bool = False) -> Throughput:
    """This machine's rates on ``device`` (default: the run's device): from memory, else the cache file,
    else a probe whose result is written to the cache. ``refresh`` re-runs the probe."""
    device = device or run_device()
    pinned = _pinned(device)
    if pinned is not None:
        return pinned
    key = machine_key(device)
    h = key_hash(key)
    with _lock:
        if not refresh and h in _memo:
            return _memo[h]
        path = cache_path(key)
        data = None if refresh else _read(path, key)
        if data is None:
            t0 = time.perf_counter()
            load = machine_load()
            rates = _probe(device)
            data = {
                "key": key,
                "rates": rates,
                "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "probe_seconds": round(time.perf_counter() - t0, 3),
                "load_per_cpu": None if load is None else round(load, 2),
            }
            if load is not None and load > 1.0:
                where = f"not cached: the machine was busy (load {load:.1f} per CPU)"
                log.info("throughput probe on a busy machine (load %.1f per CPU): not cached", load)
            else:
                where = f"cached at {path}"
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
                    os.replace(tmp, path)
                except OSError as exc:  # a read-only cache costs a probe per process, nothing more
                    log.warning("could not cache the throughput probe at %s: %s", path, exc)
                    where = "not cached (the cache folder is not writable)"
        else:
            where = f"cached at {path}"
        rates = data["rates"]
        tp = Throughput(
            **{f: float(rates[f]) for f in _RATE_FIELDS},
            device=device,
            source=f"measured on this machine {data['measured_at']}, {where}",
        )
        _memo[h] = tp
        return tp


def clear_memo() -> None:
    """Forget the in-process copies (the cache files stay)."""
    with _lock:
        _memo.clear()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Show (or re-measure) this machine's cached throughput.")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the run's device)")
    parser.add_argument("--refresh", action="store_true", help="run the probe again and re-cache it")
    args = parser.parse_args(argv)
    tp = get_throughput(args.device, refresh=args.refresh)
    print(json.dumps(asdict(tp), indent=1))


if __name__ == "__main__":
    main()
