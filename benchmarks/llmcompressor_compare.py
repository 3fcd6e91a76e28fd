"""Side-by-side: Shrinkwise's GPTQ against llm-compressor's GPTQ on the demo model, in one run.

Same model (SmolLM2-135M-Instruct, float32 safetensors copy of the shipped GGUF), same calibration token
windows (saved to a ``.pt`` file and loaded by both), same held-out windows, and the same perplexity
function (defined here, using only torch, and run by both processes). llm-compressor lives in its own
virtual environment (``benchmarks/.venv-llmc``, created on first run with ``torch==2.13.0`` pinned so
pip does not pull a CUDA build, then ``llmcompressor``, which may bring an older transformers).

Schemes (group 64 on both sides: llm-compressor refuses group 128 on SmolLM2's 576-wide layers, and 64
divides every width of this model, so both tools form the same groups):
  * W4A16 g64: 4-bit symmetric weights, groups of 64 (llm-compressor's ``W4A16`` preset with group 64);
  * W3A16 g64: the same at 3 bits.
Each scheme is run with the same GPTQ options on both sides: symmetric, act-order with static groups
(llm-compressor's default ``actorder="static"``), dampening 0.01, block 128, and every linear layer of
a decoder block calibrated from one pass over that block (llm-compressor's sequential pipeline; ours
with ``true_sequential=False``; ``--true-sequential`` turns on our finer order).

Usage::

    .venv/bin/python benchmarks/llmcompressor_compare.py --calib 128 --eval 20

Prints one table: perplexity of each side, its change vs the original, compression wall time, and the
ratios (ours / theirs). Timings are wall-clock on whatever CPU runs it; both sides run one after the
other under the same load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-llmc"
SCHEMES = {"W4A16-g64": {"bits": 4, "group_size": 64}, "W3A16-g64": {"bits": 3, "group_size": 64}}


def perplexity(model, windows: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy) over non-overlapping windows, one window at a time."""
    nll, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logits = model(input_ids=w[None], use_cache=False).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, w[1:], reduction="sum"))
            n += w.numel() - 1
    return math.exp(nll / n)


# --- the llm-compressor side (runs inside benchmarks/.venv-llmc) -----------------------------------


def worker(args: argparse.Namespace) -> None:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from transformers import AutoModelForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    data = torch.load(args.data)
    calib, ev = data["calib"], data["eval"]
    scheme = SCHEMES[args.scheme]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, trust_remote_code=False)
    model.eval()
    ds = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})
    recipe = GPTQModifier(
        ignore=["lm_head"],
        dampening_frac=0.01,
        block_size=128,
        actorder="static",
        config_groups={
            "group_0": {
                "targets": ["Linear"],
                "weights": {
                    "num_bits": scheme["bits"],
                    "type": "int",
                    "symmetric": True,
                    "strategy": "group",
                    "group_size": scheme["group_size"],
                },
            }
        },
    )
    t = time.perf_counter()
    oneshot(
        model=model,
        dataset=ds,
        recipe=recipe,
        num_calibration_samples=calib.shape[0],
        max_seq_length=calib.shape[1],
        pipeline="sequential",
    )
    secs = time.perf_counter() - t
    ppl = perplexity(model, ev)
    import llmcompressor

    Path(args.result).write_text(
        json.dumps({"ppl": ppl, "seconds": secs, "version": llmcompressor.__version__})
    )


# --- the driver (runs in the project's .venv) --------------------------------------------------------


def ensure_venv() -> Path:
    py = VENV / "bin" / "python"
    if (
        py.exists()
        and subprocess.run([str(py), "-c", "import llmcompressor"], capture_output=True).returncode == 0
    ):
        return py
    print(f"creating {VENV} (torch==2.13.0 pinned, then llmcompressor)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(pip + ["llmcompressor", "torch==2.13.0"], check=True)
    return py


def ours(model_dir: Path, calib: torch.Tensor, ev: torch.Tensor, scheme: dict, true_sequential: bool) -> dict:
    from compressors.base import RunContext, get_compressor
    from compressors.models import load_model

    model, _ = load_model(str(model_dir))
    comp = get_compressor("gptq")
    cfg = comp.config_cls(
        bits=scheme["bits"],
        group_size=scheme["group_size"],
        sym=True,
        act_order=True,
        static_groups=True,
        percdamp=0.01,
        blocksize=128,
        true_sequential=true_sequential,
    )
    t = time.perf_counter()
    comp.compress(model, None, cfg, RunContext(calibration=calib))
    secs = time.perf_counter() - t
    return {"ppl": perplexity(model, ev), "seconds": secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=128, help="calibration windows (512 tokens each)")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--eval", type=int, default=20, help="held-out windows (512 tokens each)")
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    ap.add_argument(
        "--true-sequential",
        action="store_true",
        help="ours calibrates o_proj on quantized q/k/v etc. (llm-compressor calibrates a whole decoder "
        "layer from one pass, which is the default here so both run the same algorithm)",
    )
    ap.add_argument(
        "--side",
        choices=["both", "ours", "llmc"],
        default="both",
        help="run one side only (e.g. both sides as two concurrent processes on a busy machine)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads in both processes (0: default)")
    ap.add_argument(
        "--base-ppl",
        type=float,
        default=None,
        help="perplexity of the original on the same windows from an earlier run (skips measuring it)",
    )
    ap.add_argument("--workdir", default=str(HERE / "results" / "llmc"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scheme", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return

    sys.path.insert(0, str(HERE.parent))
    if args.threads:
        torch.set_num_threads(args.threads)
    from compressors.demo import ensure_demo_checkpoint
    from compressors.models import load_model
    from compressors.text import calibration_windows, default_split, eval_windows

    py = ensure_venv() if args.side != "ours" else None
    model_dir = ensure_demo_checkpoint()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    model, tok = load_model(str(model_dir))
    split = default_split()
    calib = calibration_windows(tok, split.calibration, n_samples=args.calib, seq_len=args.seq)
    ev = eval_windows(tok, split.evaluation, n_windows=args.eval, seq_len=args.seq)
    data = work / f"windows-{'-'.join(args.schemes)}.pt"
    torch.save({"calib": calib, "eval": ev}, data)
    base = args.base_ppl if args.base_ppl else perplexity(model, ev)
    del model
    print(
        f"original: ppl {base:.3f}  (calibration {args.calib}×{args.seq}, held-out {args.eval}×{args.seq} tokens)",
        flush=True,
    )

    rows = []
    for name in args.schemes:
        scheme = SCHEMES[name]
        res = work / f"llmc-{name}.json"
        mine = work / f"ours-{name}.json"
        if args.side in ("both", "llmc"):
            env = dict(os.environ, PYTHONPATH="")
            subprocess.run(
                [
                    str(py),
                    __file__,
                    "--worker",
                    "--scheme",
                    name,
                    "--model",
                    str(model_dir),
                    "--data",
                    str(data),
                    "--result",
                    str(res),
                    "--threads",
                    str(args.threads),
                ],
                check=True,
                env=env,
            )
            r_llmc = json.loads(res.read_text())
            print(
                f"  llm-compressor {r_llmc['version']} {name}: ppl {r_llmc['ppl']:.3f} in {r_llmc['seconds']:.0f} s",
                flush=True,
            )
        if args.side in ("both", "ours"):
            r_ours = ours(model_dir, calib, ev, scheme, args.true_sequential)
            mine.write_text(json.dumps(r_ours))
            print(f"  shrinkwise   {name}: ppl {r_ours['ppl']:.3f} in {r_ours['seconds']:.0f} s", flush=True)
        if not (res.is_file() and mine.is_file()):
            continue  # the other side runs in another process; rerun with --side of the missing one
        rows.append((name, json.loads(mine.read_text()), json.loads(res.read_text())))

    print()
    print(
        "| scheme | ours ppl (Δ) | llm-compressor ppl (Δ) | ours s | llm-compressor s | ppl ratio | time ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, a, b in rows:
        print(
            f"| {name} | {a['ppl']:.3f} ({100 * (a['ppl'] / base - 1):+.1f}%) | {b['ppl']:.3f} ({100 * (b['ppl'] / base - 1):+.1f}%) "
            f"| {a['seconds']:.0f} | {b['seconds']:.0f} | {a['ppl'] / b['ppl']:.3f} | {a['seconds'] / b['seconds']:.2f} |"
        )
    (work / f"summary-{'-'.join(args.schemes)}.json").write_text(
        json.dumps(
            {"base": base, "rows": [{"scheme": n, "ours": a, "llmcompressor": b} for n, a, b in rows]},
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
