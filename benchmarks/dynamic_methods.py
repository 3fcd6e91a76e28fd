"""Benchmark of Shrinkwise's dynamic compressors on the demo model (SmolLM2-135M-Instruct, float32, CPU).

Token pruning (LazyLLM, AIM), on long prompts of held-out text (the evaluation part of the built-in
pydoc split, never seen by any calibration):

- **TTFT**: wall time of the prompt's prefill forward, which yields the first token's logits (median
  of ``--repeats``);
- **compute**: token-layer pairs computed in the prefill / those of the full prefill;
- **next token**: does the first predicted token equal the unpruned model's (top-1 agreement) and the
  KL divergence KL(full ‖ pruned) of that distribution;
- **continuation**: the next ``--cont`` tokens of the real text are fed one at a time through the
  pruned cache (as ``generate`` does, revival included); reported: top-1 agreement with the unpruned
  model's predictions at those positions, mean KL, and the continuation's perplexity.

TEAL, the post-training dynamic method (the paper's gap):

- held-out perplexity with the harness's windows (20 × 512 tokens) at 0/25/40/50 % activation sparsity,
  thresholds calibrated on 16 × 512 calibration tokens;
- greedy decode tokens per CPU-second (1 thread) at batch 1 with the C++ sparse kernel vs the dense model, and vs the same kernel
  at 0 % (only natural zeros skipped), so the gain of the kernel and the gain of sparsity are separate;
- the share of the block linears' multiply-adds skipped while decoding.

Run: ``.venv/bin/python benchmarks/dynamic_methods.py`` (about 10-15 minutes on the project's CPU).
Prints a table and writes ``benchmarks/results/dynamic.md`` and ``dynamic.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compressors.base import RunContext, get_compressor  # noqa: E402
from compressors.dynamic.teal import (  # noqa: E402
    install_teal,
    measured_sparsity,
    set_counting,
    skipped_flops_fraction,
    uninstall_teal,
)
from compressors.dynamic.tokens import (  # noqa: E402
    PrunedCache,
    installed_plan,
    last_prefill_stats,
    uninstall_token_plan,
)
from compressors.hf_compat import cache_kwarg, output_cache  # noqa: E402

TOKEN_SETTINGS = [
    ("lazyllm", {"ratio": 0.0}),
    ("lazyllm", {"ratio": 0.3}),
    ("lazyllm", {"ratio": 0.5}),
    ("lazyllm", {"ratio": 0.5, "revive": False}),
    ("lazyllm", {"ratio": 0.7}),
    ("aim", {"merge_ratio": 0.0, "prune_ratio": 0.0}),
    ("aim", {"merge_ratio": 0.2, "merge_layer": 0, "prune_ratio": 0.0}),
    ("aim", {"merge_ratio": 0.2, "merge_layer": 2, "prune_ratio": 0.0}),
    ("aim", {"merge_ratio": 0.0, "prune_ratio": 0.5}),
    ("aim", {}),  # defaults: merge 20% at layer 2, prune 40% from half depth
    ("aim", {"merge_ratio": 0.2, "merge_layer": 0, "prune_ratio": 0.4}),
]
TEAL_SPARSITIES = [0.25, 0.40, 0.50]


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row from logits."""
    lp, lq = p_logits.float().log_softmax(-1), q_logits.float().log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1)


@torch.no_grad()
def run_prompt(model, prompt: torch.Tensor, cont: torch.Tensor, repeats: int):
    """Prefill ``prompt`` (timed), then feed ``cont`` token by token; logits of first + continuation."""
    times = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = model(input_ids=prompt[None], use_cache=True, logits_to_keep=1)
        times.append((time.process_time() - c0, time.perf_counter() - t0))
    stats = last_prefill_stats(model) if installed_plan(model) is not None else None
    past = output_cache(out)
    logits = [out.logits[0, -1]]
    for tok in cont[:-1]:
        out = model(input_ids=tok.view(1, 1), use_cache=True, **{cache_kwarg(model, {}): past})
        past = output_cache(out)
        logits.append(out.logits[0, -1])
    revived = past.revived_total if isinstance(past, PrunedCache) else 0
    return min(times), torch.stack(logits), stats, revived


def token_benchmark(model, prompts, conts, repeats: int) -> list[dict]:
    rows = []
    ref = []
    for p, c in zip(prompts, conts):
        t, logits, _, _ = run_prompt(model, p, c, repeats)
        ref.append((t, logits))
    rows.append(_token_row("dense", {}, ref, ref, conts, [None] * len(ref), [0] * len(ref)))
    for method, cfg in TOKEN_SETTINGS:
        comp = get_compressor(method)
        comp.compress(model, None, comp.config_cls.from_dict(cfg), RunContext())
        res, stats, revived = [], [], []
        for p, c in zip(prompts, conts):
            t, logits, st, rv = run_prompt(model, p, c, repeats)
            res.append((t, logits))
            stats.append(st)
            revived.append(rv)
        uninstall_token_plan(model)
        rows.append(_token_row(method, cfg, res, ref, conts, stats, revived))
        print(_fmt_token(rows[-1]), flush=True)
    return rows


def _token_row(method, cfg, res, ref, conts, stats, revived) -> dict:
    ttft = sum(t[0] for t, _ in res) / len(res)  # CPU seconds of the process (1 thread)
    ttft_ref = sum(t[0] for t, _ in ref) / len(ref)
    wall = sum(t[1] for t, _ in res) / len(res)
    first_agree = sum(int(r[1][0].argmax() == q[1][0].argmax()) for r, q in zip(ref, res)) / len(res)
    first_kl = sum(float(_kl(r[1][0:1], q[1][0:1])) for r, q in zip(ref, res)) / len(res)
    agree = torch.cat([(r[1][1:].argmax(-1) == q[1][1:].argmax(-1)).float() for r, q in zip(ref, res)]).mean()
    kl = torch.cat([_kl(r[1][1:], q[1][1:]) for r, q in zip(ref, res)]).mean()
    nll = torch.cat(
        [torch.nn.functional.cross_entropy(q[1].float(), c, reduction="none") for q, c in zip(res, conts)]
    )
    compute = [s.compute_fraction for s in stats if s is not None]
    return {
        "method": method,
        "config": cfg,
        "ttft_s": ttft,
        "ttft_wall_s": wall,
        "ttft_speedup": ttft_ref / ttft,
        "compute": sum(compute) / len(compute) if compute else 1.0,
        "first_top1": first_agree,
        "first_kl": first_kl,
        "cont_top1": float(agree),
        "cont_kl": float(kl),
        "cont_ppl": math.exp(float(nll.mean())),
        "revived": sum(revived) / len(revived),
    }


def _fmt_cfg(cfg: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in cfg.items()) or "-"


def _fmt_token(r: dict) -> str:
    setting = "-" if r["method"] == "dense" else (_fmt_cfg(r["config"]) if r["config"] else "defaults")
    return (
        f"| {r['method']} | {setting} | {r['ttft_s'] * 1000:.0f} | {r['ttft_wall_s'] * 1000:.0f} | "
        f"{r['ttft_speedup']:.2f}× | "
        f"{r['compute']:.0%} | {r['first_top1']:.0%} | {r['first_kl']:.3f} | {r['cont_top1']:.1%} | "
        f"{r['cont_kl']:.3f} | {r['cont_ppl']:.2f} | {r['revived']:.0f} |"
    )


@torch.no_grad()
def decode_speed(model, prompt: torch.Tensor, n: int, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        out = model(input_ids=prompt[None], use_cache=True)
        past, nxt = output_cache(out), out.logits[0, -1].argmax().view(1, 1)
        c0 = time.process_time()
        for _ in range(n):
            out = model(input_ids=nxt, use_cache=True, **{cache_kwarg(model, {}): past})
            past, nxt = output_cache(out), out.logits[0, -1].argmax().view(1, 1)
        best = max(best, n / (time.process_time() - c0))
    return best


def teal_benchmark(model, tokenizer, texts, args) -> list[dict]:
    from compressors.dynamic.sparse_kernel import load_kernel
    from compressors.dynamic.teal import calibrate_thresholds
    from compressors.evaluate import perplexity
    from compressors.text import calibration_windows, eval_windows

    windows = eval_windows(tokenizer, texts.evaluation, args.eval_windows, 512)
    calib = calibration_windows(tokenizer, texts.calibration, args.calib, 512, seed=0)
    prompt = windows[0, :128]
    kernel_ok = load_kernel() is not None
    rows = []
    t = time.perf_counter()
    ppl0 = perplexity(model, windows)
    dense_tps = decode_speed(model, prompt, args.decode, args.repeats)
    rows.append(
        {
            "method": "teal",
            "sparsity": 0.0,
            "mode": "dense (not installed)",
            "ppl": ppl0,
            "decode_tps": dense_tps,
            "speedup": 1.0,
            "measured_sparsity": 0.0,
            "flops_skipped": 0.0,
            "calib_s": 0.0,
        }
    )
    print(rows[-1], flush=True)
    if kernel_ok:  # the kernel alone: threshold 0 skips only exact zeros
        zeros = {n: 0.0 for n in calibrate_thresholds(model, [calib[:1]], 0.0)}
        install_teal(model, zeros, kernel="cpp", skip_zero=False)
        tps = decode_speed(model, prompt, args.decode, args.repeats)
        uninstall_teal(model)
        rows.append(
            {
                "method": "teal",
                "sparsity": 0.0,
                "mode": "C++ kernel, threshold 0",
                "ppl": ppl0,
                "decode_tps": tps,
                "speedup": tps / dense_tps,
                "measured_sparsity": 0.0,
                "flops_skipped": 0.0,
                "calib_s": 0.0,
            }
        )
        print(rows[-1], flush=True)
    t = time.process_time()
    all_th = calibrate_thresholds(
        model, (calib[i : i + 1] for i in range(calib.shape[0])), TEAL_SPARSITIES, n_batches=calib.shape[0]
    )
    calib_s = time.process_time() - t  # one pass serves every sparsity
    for s in TEAL_SPARSITIES:
        th = all_th[s]
        install_teal(model, th, kernel="cpp" if kernel_ok else "torch", skip_zero=False)
        ppl = perplexity(model, windows)
        set_counting(model, True)
        tps = decode_speed(model, prompt, args.decode, args.repeats)
        ms, fs = measured_sparsity(model), skipped_flops_fraction(model)
        set_counting(model, False)
        uninstall_teal(model)
        rows.append(
            {
                "method": "teal",
                "sparsity": s,
                "mode": "C++ kernel" if kernel_ok else "masked dense",
                "ppl": ppl,
                "decode_tps": tps,
                "speedup": tps / dense_tps,
                "measured_sparsity": ms,
                "flops_skipped": fs,
                "calib_s": calib_s,
            }
        )
        print(rows[-1], flush=True)
    return rows


def decode_ab(model, tokenizer, texts, args) -> list[dict]:
    """Decode speed of dense vs TEAL (kernel at 0/25/40/50 %) measured in alternation, ``--ab`` rounds.

    The CPU is shared with other processes, so a single measurement drifts with their load; alternating
    the variants within each round and taking the median per variant compares them under the same load.
    """
    from compressors.dynamic.teal import calibrate_thresholds
    from compressors.text import calibration_windows, eval_windows

    prompt = eval_windows(tokenizer, texts.evaluation, 1, 512)[0, :128]
    calib = calibration_windows(tokenizer, texts.calibration, args.calib, 512, seed=0)
    th = calibrate_thresholds(
        model,
        (calib[i : i + 1] for i in range(calib.shape[0])),
        [0.0] + TEAL_SPARSITIES,
        n_batches=calib.shape[0],
    )
    variants = ["dense"] + [f"kernel {s:.0%}" for s in [0.0] + TEAL_SPARSITIES]
    speeds: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.ab):
        for v, s in zip(variants, [None, 0.0] + TEAL_SPARSITIES):
            if s is not None:
                install_teal(model, th[s], kernel="cpp", skip_zero=False)
            speeds[v].append(decode_speed(model, prompt, args.decode, 1))
            uninstall_teal(model)
    med = {v: sorted(x)[len(x) // 2] for v, x in speeds.items()}
    rows = [
        {"variant": v, "median_tps": med[v], "runs": speeds[v], "speedup": med[v] / med["dense"]}
        for v in variants
    ]
    for r in rows:
        print(r, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=3, help="long prompts (distinct held-out offsets)")
    ap.add_argument("--prompt-len", type=int, default=1536)
    ap.add_argument("--cont", type=int, default=48, help="continuation tokens fed after each prompt")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared; 1 is stable)")
    ap.add_argument("--eval-windows", type=int, default=20)
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--decode", type=int, default=48)
    ap.add_argument("--skip-teal", action="store_true")
    ap.add_argument(
        "--ab", type=int, default=0, help="rounds of the alternating dense/TEAL decode comparison"
    )
    ap.add_argument("--skip-tokens", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="dynamic", help="output file stem (<name>.md, <name>.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from compressors.models import load_model
    from compressors.text import default_split, tokenize

    model, tokenizer = load_model("demo")
    texts = default_split()
    ids = tokenize(tokenizer, texts.evaluation)
    span = args.prompt_len + args.cont
    starts = [i * (ids.numel() - span) // max(args.prompts, 1) for i in range(args.prompts)]
    prompts = [ids[s : s + args.prompt_len] for s in starts]
    conts = [ids[s + args.prompt_len : s + span] for s in starts]

    token_rows = [] if args.skip_tokens else token_benchmark(model, prompts, conts, args.repeats)
    teal_rows = [] if args.skip_teal else teal_benchmark(model, tokenizer, texts, args)
    ab_rows = decode_ab(model, tokenizer, texts, args) if args.ab else []

    lines = [
        "# Dynamic methods on the demo model (SmolLM2-135M-Instruct, float32, CPU)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `benchmarks/dynamic_methods.py "
        f"{' '.join(sys.argv[1:])}` ({args.threads} torch thread(s), a shared 2-core CPU: timings are noisy).",
        "",
    ]
    if token_rows:
        lines += [
            f"## Token pruning: {args.prompts} held-out prompts of {args.prompt_len} tokens, "
            f"{args.cont} continuation tokens each",
            "",
            "TTFT = prefill forward time, the process's CPU time (1 thread; far less disturbed than wall time by the other "
            "processes sharing the CPU) and wall time, best of repeats, mean over prompts; compute = token-layer pairs "
            "computed / full prefill; next token = first generated token vs the unpruned model (top-1 "
            "agreement, KL(full‖pruned)); continuation = real next tokens fed one at a time through the "
            "pruned cache (agreement and KL against the unpruned model's predictions at the same positions, "
            "perplexity of the real text); revived = prompt tokens brought back from the aux cache per prompt.",
            "",
            "| method | setting | TTFT CPU ms | TTFT wall ms | TTFT speed-up (CPU) | compute | next-token top-1 | next-token KL | "
            "continuation top-1 | continuation KL | continuation ppl | revived |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        lines += [_fmt_token(r) for r in token_rows]
        lines.append("")
    if teal_rows:
        lines += [
            f"## TEAL: held-out perplexity ({args.eval_windows}×512 tokens) and greedy decode speed at batch 1 "
            f"({args.decode} tokens after a 128-token prompt); thresholds from {args.calib}×512 calibration tokens",
            "",
            "| sparsity target | mode | perplexity | Δ ppl | decode tok/CPU-s | speed-up vs dense | measured sparsity "
            "(decode) | multiply-adds skipped | calibration CPU-s (one pass for all) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        p0 = teal_rows[0]["ppl"]
        for r in teal_rows:
            lines.append(
                f"| {r['sparsity']:.0%} | {r['mode']} | {r['ppl']:.3f} | {100 * (r['ppl'] / p0 - 1):+.1f}% | "
                f"{r['decode_tps']:.1f} | {r['speedup']:.2f}× | {r['measured_sparsity']:.1%} | "
                f"{r['flops_skipped']:.1%} | {r['calib_s']:.1f} |"
            )
        lines.append("")
    if ab_rows:
        lines += [
            f"## TEAL decode, alternating comparison: {args.ab} rounds, each variant once per round "
            f"({args.decode} greedy tokens after a 128-token prompt), median tokens per CPU-second",
            "",
            "| variant | median tok/CPU-s | speed-up vs dense | all runs |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['variant']} | {r['median_tps']:.1f} | {r['speedup']:.2f}× | "
            f"{', '.join(f'{x:.1f}' for x in r['runs'])} |"
            for r in ab_rows
        ]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(
        json.dumps({"tokens": token_rows, "teal": teal_rows, "teal_decode_ab": ab_rows}, indent=2)
    )


if __name__ == "__main__":
    main()
