"""Every bundled post-training / inference compressor on the demo model, in one table.

Each setting runs in its own process (so peak memory is that run's own) through
:func:`compressors.run.compress_and_measure`: the same 128 x 512 calibration windows (seed 0) from the
built-in calibration text, the same 20 x 512 held-out evaluation windows, the model measured *after
loading back its saved packed checkpoint*. The original model is measured once the same way.

Columns: held-out perplexity and change vs the original, size on disk of the saved checkpoint folder,
bits per weight of the compressed layers and of the whole model (everything stored: codes, scales,
zeros, indices, outliers), compression time, peak RSS of the run, decode tokens/s (greedy, KV cache).

::

    .venv/bin/python benchmarks/compressors_table.py            # full: 128x512 calibration, 20x512 eval
    .venv/bin/python benchmarks/compressors_table.py --quick    # 16x512 calibration, 4x512 eval
    .venv/bin/python benchmarks/compressors_table.py --only rtn:bits=4,group_size=64 cpu-inference

Writes ``benchmarks/results/compressors.md`` (or ``--out``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (method id, settings): the issue-5 grid. Group size 64 divides SmolLM2's 576-wide layers (128 does not:
# both work here, only g=64 can also be exported to compressed-tensors).
SETTINGS: list[tuple[str, dict]] = [
    ("rtn", {"bits": 4, "group_size": 128}),
    ("gptq", {"bits": 4, "group_size": 128}),
    ("rtn", {"bits": 4, "group_size": 64}),
    ("gptq", {"bits": 4, "group_size": 64}),
    ("rtn", {"bits": 3, "group_size": 64}),
    ("gptq", {"bits": 3, "group_size": 64}),
    ("spqr", {}),
    ("magnitude", {"sparsity": 0.5}),
    ("wanda", {"sparsity": 0.5}),
    ("sparsegpt", {"sparsity": 0.5}),
    ("magnitude", {"pattern": "2:4"}),
    ("wanda", {"pattern": "2:4"}),
    ("sparsegpt", {"pattern": "2:4"}),
    ("cpu-inference", {}),
    ("cpu-inference", {"include_lm_head": True}),
]


def parse_setting(text: str) -> tuple[str, dict]:
    """``gptq:bits=4,group_size=64`` -> ("gptq", {"bits": 4, "group_size": 64})."""
    method, _, rest = text.partition(":")
    cfg: dict = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        try:
            cfg[k] = json.loads(v)
        except json.JSONDecodeError:
            cfg[k] = v
    return method, cfg


def setting_label(cfg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items()) or "defaults"


def run_one(method: str, cfg: dict, calib: int, eval_windows: int, out_json: Path) -> None:
    """Child process: one compression, its result written as JSON."""
    from compressors.run import compress_and_measure

    with tempfile.TemporaryDirectory(prefix="sw-bench-") as tmp:
        r = compress_and_measure(
            "demo",
            method,
            cfg,
            out_dir=tmp,
            n_calib_samples=calib,
            calib_seq_len=512,
            eval_windows=eval_windows,
            eval_seq_len=512,
            measure_before=False,
            archive=None,
            export=True,
        )
        d = r.to_dict()
        d["export"] = "yes" if r.artifacts.export_dir else "no"
    out_json.write_text(json.dumps(d, default=str))


def measure_original(eval_windows: int, out_json: Path) -> None:
    from compressors.evaluate import evaluate
    from compressors.models import inspect_checkpoint, load_model
    from compressors.text import default_split

    info = inspect_checkpoint("demo")
    model, tok = load_model("demo")
    r = evaluate(
        model, tok, default_split().evaluation, n_windows=eval_windows, seq_len=512, checkpoint_dir=info.path
    )
    out_json.write_text(
        json.dumps(
            {"after": r.to_dict(), "timings": {"compress": 0.0}, "compress_peak_rss_bytes": r.peak_rss_bytes},
            default=str,
        )
    )


def int8_speedup(rounds: int, out_json: Path) -> None:
    """float32 vs dynamic int8, measured alternately in one process so both see the same machine load."""
    import copy
    import statistics

    from compressors.base import RunContext, get_compressor
    from compressors.evaluate import speed
    from compressors.models import load_model
    from compressors.text import default_split, tokenize

    model, tok = load_model("demo")
    comp = get_compressor("cpu-inference")
    variants = {"float32": model}
    for label, cfg in (("int8 (blocks)", {}), ("int8 (blocks + lm_head)", {"include_lm_head": True})):
        m = copy.deepcopy(model)
        comp.compress(m, tok, comp.config_cls.from_dict(cfg), RunContext())
        variants[label] = m
    prompt = tokenize(tok, default_split().evaluation)[:256]
    res: dict[str, dict[str, list[float]]] = {k: {"prefill": [], "decode": []} for k in variants}
    for _ in range(rounds):
        for label, m in variants.items():
            p, d = speed(m, prompt, decode_tokens=32, repeats=1)
            res[label]["prefill"].append(p)
            res[label]["decode"].append(d)
    out = {
        k: {"prefill": statistics.median(v["prefill"]), "decode": statistics.median(v["decode"])}
        for k, v in res.items()
    }
    out_json.write_text(json.dumps({"rounds": rounds, "median": out}))


def speedup_table(d: dict, threads: int) -> str:
    base = d["median"]["float32"]
    lines = [
        "",
        f"## Dynamic int8 vs float32, interleaved ({d['rounds']} rounds, medians, {threads} thread(s))",
        "",
        "Prefill: 256-token prompt. Decode: 32 greedy tokens with the KV cache. Each round measures every "
        "variant once, in the same process, so all see the same machine load.",
        "",
        "| model | prefill tok/s | speed-up | decode tok/s | speed-up |",
        "|---|---|---|---|---|",
    ]
    for k, v in d["median"].items():
        lines.append(
            f"| {k} | {v['prefill']:.1f} | {v['prefill'] / base['prefill']:.2f}x | "
            f"{v['decode']:.2f} | {v['decode'] / base['decode']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def _child(args: list[str], out_json: Path) -> dict | None:
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, *args, "--child-out", str(out_json)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        print(f"  failed after {time.perf_counter() - t:.0f} s:\n{tail}", file=sys.stderr)
        return None
    return json.loads(out_json.read_text())


def _est(r: dict) -> str:
    e = r.get("estimate")
    return "-" if not e else f"{e['seconds']:.0f} s / {e['peak_memory_bytes'] / 1e6:.0f} MB"


def table(rows: list[dict], base_ppl: float, base_decode: float, header: str) -> str:
    lines = [
        header,
        "",
        "| method | setting | ppl | Δppl | size on disk | bits/w (layers) | bits/w (model) | compress s | peak RSS | estimate: s / peak | decode tok/s | export |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = r["after"]
        bl = a["bits_per_weight_compressed"]
        lines.append(
            f"| {r['method']} | {r['setting']} | {a['perplexity']:.2f} | "
            f"{100 * (a['perplexity'] / base_ppl - 1):+.1f}% | {a['size_on_disk_bytes'] / 1e6:.1f} MB | "
            f"{'-' if bl is None else f'{bl:.3f}'} | {a['bits_per_weight_model']:.2f} | "
            f"{r['timings']['compress']:.1f} | {r['compress_peak_rss_bytes'] / 1e6:.0f} MB | {_est(r)} | "
            f"{a['decode_tokens_per_s']:.1f} ({a['decode_tokens_per_s'] / base_decode:.2f}x) | {r.get('export', '-')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="16x512 calibration, 4x512 evaluation")
    p.add_argument("--calib", type=int, default=None, help="calibration windows of 512 tokens (default 128)")
    p.add_argument(
        "--eval-windows", type=int, default=None, help="evaluation windows of 512 tokens (default 20)"
    )
    p.add_argument("--only", nargs="*", default=None, help="settings like gptq:bits=3,group_size=64")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per run (default 1: steadier timings on a shared machine)",
    )
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "compressors.md")
    p.add_argument("--child", nargs=2, metavar=("METHOD", "CONFIG_JSON"), help=argparse.SUPPRESS)
    p.add_argument("--child-original", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-speedup", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--speed-rounds", type=int, default=5, help="rounds of the interleaved int8/float32 speed test"
    )
    p.add_argument("--no-speedup", action="store_true", help="skip the interleaved int8/float32 speed test")
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    calib = a.calib or (16 if a.quick else 128)
    ev = a.eval_windows or (4 if a.quick else 20)
    if a.child:
        run_one(a.child[0], json.loads(a.child[1]), calib, ev, a.child_out)
        return
    if a.child_original:
        measure_original(ev, a.child_out)
        return
    if a.child_speedup:
        int8_speedup(a.speed_rounds, a.child_out)
        return

    settings = [parse_setting(s) for s in a.only] if a.only else SETTINGS
    common = ["--calib", str(calib), "--eval-windows", str(ev), "--threads", str(a.threads)]
    tmp = Path(tempfile.mkdtemp(prefix="sw-bench-"))
    print(f"original model ({ev}x512 evaluation tokens)...", file=sys.stderr)
    base = _child(common + ["--child-original"], tmp / "original.json")
    if base is None:
        sys.exit("measuring the original model failed")
    base_ppl, base_decode = base["after"]["perplexity"], base["after"]["decode_tokens_per_s"]
    rows = [{"method": "original (float32)", "setting": "-", **base}]
    for i, (method, cfg) in enumerate(settings):
        print(f"[{i + 1}/{len(settings)}] {method} {setting_label(cfg)}...", file=sys.stderr)
        r = _child(common + ["--child", method, json.dumps(cfg)], tmp / f"run{i}.json")
        if r is not None:
            rows.append({"method": method, "setting": setting_label(cfg), **r})
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(table(rows, base_ppl, base_decode, _header(a, calib, ev)))  # partial results
    md = table(rows, base_ppl, base_decode, _header(a, calib, ev))
    if not a.no_speedup:
        print("interleaved int8 / float32 speed test...", file=sys.stderr)
        sp = _child(
            ["--threads", str(a.threads), "--speed-rounds", str(a.speed_rounds), "--child-speedup"],
            tmp / "speedup.json",
        )
        if sp is not None:
            md += speedup_table(sp, a.threads)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(md)
    print(md)


def _header(a, calib: int, ev: int) -> str:
    import platform

    import torch

    return (
        f"# Compressors on SmolLM2-135M-Instruct (demo model)\n\n"
        f"Calibration {calib}x512 tokens (seed 0), held-out evaluation {ev}x512 tokens, built-in pydoc text. "
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"other processes may have shared the CPU, so speeds are indicative. Command: "
        f"`.venv/bin/python benchmarks/compressors_table.py{' --quick' if a.quick else ''} --threads {a.threads}`."
    )


if __name__ == "__main__":
    main()
