"""The training compressors on the demo model, with small budgets: llm-pruner, selective-distillation
(against plain distillation at equal steps) and sparse-pretraining (one-shot vs after training).

Every run loads a fresh SmolLM2-135M-Instruct, trains on windows of the built-in calibration text and
measures perplexity on held-out windows of the built-in evaluation text (never trained on). Each
invocation appends one JSON line per result to ``benchmarks/results/training.jsonl`` and rewrites
``benchmarks/results/training.md`` from every line recorded so far, so the methods can be run one at a
time::

    .venv/bin/python benchmarks/training_methods.py llm-pruner --steps 30
    .venv/bin/python benchmarks/training_methods.py distill --steps 20
    .venv/bin/python benchmarks/training_methods.py sparse --steps 30
    .venv/bin/python benchmarks/training_methods.py table      # only re-render the Markdown

Budgets are small on purpose: on this project's shared 2-core CPU one training step of the 135 M model
on 2×64 tokens takes seconds, so "a few hundred steps" does not fit in minutes here; the table says how
many steps, tokens and seconds every figure took.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
JSONL = RESULTS / "training.jsonl"
MD = RESULTS / "training.md"


def load(args):
    from compressors.models import load_model
    from compressors.text import calibration_windows, default_split, eval_windows, tokenize

    model, tok = load_model("demo")
    split = default_split()
    calib = calibration_windows(
        tok, split.calibration, args.calib, args.calib_seq, seed=0, ids=tokenize(tok, split.calibration)
    )
    ev = eval_windows(tok, split.evaluation, args.eval_windows, args.eval_seq)
    return model, tok, calib, ev


def run(method_id: str, cfg: dict, args, setting: str) -> dict:
    from compressors.base import RunContext, get_compressor
    from compressors.models import model_shape

    model, tok, calib, ev = load(args)
    comp = get_compressor(method_id)
    config = comp.config_cls.from_dict(cfg)
    est = comp.estimate(model_shape(model.config), config)
    comp.eval_tokens = ev
    ctx = RunContext(calibration=calib, progress=lambda s, f, m="": logging.info("%s %.2f %s", s, f, m))
    t0 = time.perf_counter()
    out = comp.compress(model, tok, config, ctx)
    seconds = time.perf_counter() - t0
    row = {
        "method": method_id,
        "setting": setting,
        "config": config.to_dict(),
        "report": comp.last_report,
        "seconds": round(seconds, 1),
        "estimate_seconds": round(est.seconds, 1),
        "estimate_peak_mb": round(est.peak_memory_bytes / 2**20),
        "eval": f"{args.eval_windows}×{args.eval_seq}",
        "calibration": f"{args.calib}×{args.calib_seq}",
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if args.save:
        out.save_pretrained(Path(args.save) / setting.replace(" ", "_"))
    with JSONL.open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")
    logging.info("%s", json.dumps(row, default=str))
    return row


def _f(x, nd=2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


DEMO_SHAPE = dict(
    n_params=134_515_008,
    n_layers=30,
    hidden_size=576,
    intermediate_size=1536,
    vocab_size=49152,
    n_heads=9,
    n_kv_heads=3,
)


def current_estimate(row: dict) -> float:
    """The compressor's estimate for the row's config under the cost model as it is now (the constants
    were refitted to these runs, so the estimate recorded at run time may be older)."""
    from compressors.base import ModelShape, get_compressor

    comp = get_compressor(row["method"])
    return comp.estimate(ModelShape(**DEMO_SHAPE), comp.config_cls.from_dict(row["config"])).seconds


def render() -> str:
    rows = (
        [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()]
        if JSONL.exists()
        else []
    )
    out = [
        "# Training compressors on the demo model (SmolLM2-135M-Instruct)",
        "",
        "Written by `benchmarks/training_methods.py` (one row per run, newest last). Perplexity on held-out",
        "windows of the built-in evaluation text (never trained on); `eval` gives windows×tokens. "
        "*before* = after pruning / layer dropping, before any training; *after* = after the training steps.",
        "Time is the whole `compress` call (importance or one-shot pruning, training and the in-run evaluations);",
        "*step s* is the measured mean training step, *est. s* the compressor's own estimate of the whole call",
        "(`estimate()` with the current cost model, evaluation counted as 3×4 windows).",
        "",
        "| method | setting | params | ppl original | ppl before training | ppl after training | steps × tokens | step s | time s | est. s | eval |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rep, c = r["report"], r["config"]
        if r["method"] == "llm-pruner":
            params = f"{rep['params_before'] / 1e6:.1f}M → {rep['params_after'] / 1e6:.1f}M"
            orig, before, after, tr = (
                rep.get("ppl_dense"),
                rep.get("ppl_pruned"),
                rep.get("ppl_recovered"),
                rep.get("recovery", {}),
            )
        elif r["method"] == "selective-distillation":
            params = f"{rep['params_teacher'] / 1e6:.1f}M → {rep['params_student'] / 1e6:.1f}M"
            orig, before, after, tr = (
                rep.get("ppl_teacher"),
                rep.get("ppl_student_before"),
                rep.get("ppl_student_after"),
                rep.get("distillation", {}),
            )
        else:
            params = f"{rep.get('mask_sparsity', 0):.0%} sparse"
            orig, before, after, tr = (
                rep.get("ppl_dense"),
                rep.get("ppl_one_shot"),
                rep.get("ppl_trained"),
                rep.get("training", {}),
            )
        out.append(
            f"| {r['method']} | {r['setting']} | {params} | {_f(orig)} | {_f(before)} | {_f(after)} | "
            f"{c.get('steps')} × {c.get('batch_size')}×{c.get('seq_len')} | {_f(tr.get('step_seconds'), 1)} | "
            f"{_f(r['seconds'], 0)} | {_f(current_estimate(r), 0)} | {r['eval']} |"
        )
    out += [
        "",
        f"Machine: {rows[-1]['machine'] if rows else '?'}, torch threads {rows[-1]['threads'] if rows else '?'}, "
        "a CPU shared with other jobs while these ran (timings vary run to run).",
    ]
    MD.write_text("\n".join(out) + "\n")
    return MD.read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["llm-pruner", "distill", "sparse", "table"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--importance", type=int, default=2, help="llm-pruner: gradient batches")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--calib", type=int, default=32, help="calibration windows (training text)")
    ap.add_argument("--calib-seq", type=int, default=128)
    ap.add_argument("--eval-windows", type=int, default=4)
    ap.add_argument("--eval-seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--one-shot", default="wanda", help="sparse: one-shot pruner")
    ap.add_argument("--select", type=float, default=0.25, help="distill: selected token fraction")
    ap.add_argument("--drop", type=float, default=0.5, help="distill: share of layers dropped")
    ap.add_argument("--rule", default="uniform", help="distill: which layers stay (uniform, middle)")
    ap.add_argument("--save", default=None, help="also save each result under this folder")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    common = {"steps": args.steps, "batch_size": args.batch, "seq_len": args.seq, "val_windows": 0}
    if args.lr is not None:
        common["lr"] = args.lr
    if args.what == "llm-pruner":
        cfg = {**common, "head_ratio": 0.34, "mlp_ratio": 0.25, "importance_batches": args.importance}
        run("llm-pruner", cfg, args, "heads 9→6 (GQA, 2 of 3 per group), MLP −25%, LoRA r8")
    elif args.what == "distill":
        base = {**common, "drop_ratio": args.drop, "layer_rule": args.rule}
        layers = f"30→{30 - round(args.drop * 30)} layers ({args.rule})"
        run("selective-distillation", {**base, "select_fraction": 1.0}, args, f"{layers}, plain KD (uniform)")
        run(
            "selective-distillation",
            {**base, "select_fraction": args.select},
            args,
            f"{layers}, selective top {args.select:.0%} KL tokens",
        )
    elif args.what == "sparse":
        cfg = {**common, "sparsity": 0.5, "pattern": "unstructured", "one_shot": args.one_shot}
        run("sparse-pretraining", cfg, args, f"50% unstructured, one-shot {args.one_shot}")
    print(render())


if __name__ == "__main__":
    main()
