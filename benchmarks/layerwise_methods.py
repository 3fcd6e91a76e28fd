"""Quick side-by-side of the layer-wise compressors on the demo model (development figures).

Runs each requested method on a fresh copy of SmolLM2-135M-Instruct with the same calibration windows
and measures held-out perplexity (same windows for every method) and compression time. The project's
full benchmark (every compressor, 128×512 calibration, size on disk, speed) is a separate script; this
one is what the figures in issue 5's algorithm report come from::

    .venv/bin/python benchmarks/layerwise_methods.py --calib 32 --eval 20 \
        rtn:bits=4,group_size=128 gptq:bits=4,group_size=128 ...
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time

import torch


def perplexity(model, windows: torch.Tensor) -> float:
    """exp(mean next-token loss) over non-overlapping windows, one window at a time."""
    nll, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logits = model(input_ids=w[None], use_cache=False).logits[0, :-1].float()
            nll += float(torch.nn.functional.cross_entropy(logits, w[1:], reduction="sum"))
            n += w.numel() - 1
    return math.exp(nll / n)


def parse_spec(spec: str) -> tuple[str, dict]:
    cid, _, rest = spec.partition(":")
    cfg: dict = {}
    for kv in filter(None, rest.split(",")):
        k, v = kv.split("=")
        if v in ("true", "false"):
            cfg[k] = v == "true"
        else:
            try:
                cfg[k] = int(v)
            except ValueError:
                try:
                    cfg[k] = float(v)
                except ValueError:
                    cfg[k] = v
    return cid, cfg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("specs", nargs="+", help="method:key=value,... (e.g. gptq:bits=3,group_size=64)")
    ap.add_argument("--calib", type=int, default=32, help="calibration windows of 512 tokens")
    ap.add_argument("--eval", type=int, default=20, help="held-out windows of 512 tokens")
    ap.add_argument("--json", default=None, help="append one JSON line per result to this file")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--base-ppl", type=float, default=None, help="skip measuring the original (value from an earlier run)"
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)

    from compressors.base import RunContext, get_compressor
    from compressors.models import load_model
    from compressors.text import calibration_windows, default_split, eval_windows

    model, tok = load_model("demo")
    split = default_split()
    calib = calibration_windows(tok, split.calibration, n_samples=args.calib)
    ev = eval_windows(tok, split.evaluation, n_windows=args.eval)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    t = time.perf_counter()
    base = args.base_ppl if args.base_ppl else perplexity(model, ev)
    print(f"original: ppl {base:.3f} ({time.perf_counter() - t:.0f} s to evaluate)", flush=True)
    for spec in args.specs:
        cid, cfg = parse_spec(spec)
        model, _ = load_model("demo")
        comp = get_compressor(cid)
        config = comp.config_cls.from_dict(cfg)
        t = time.perf_counter()
        comp.compress(model, tok, config, RunContext(calibration=calib))
        secs = time.perf_counter() - t
        ppl = perplexity(model, ev)
        extra = ""
        rep = getattr(comp, "last_report", None)
        if rep is not None:
            solve = sum(v["seconds"] for v in rep.layers.values())
            extra += f" (layer solves {solve:.0f} s, forward passes {secs - solve:.0f} s)"
        if hasattr(comp, "last_bits_per_param"):
            extra += f" bits/param (paper) {comp.last_bits_per_param:.3f}"
        print(f"{spec}: ppl {ppl:.3f} ({100 * (ppl / base - 1):+.1f}%) in {secs:.0f} s{extra}", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "spec": spec,
                            "ppl": ppl,
                            "base": base,
                            "seconds": secs,
                            "calib": args.calib,
                            "eval": args.eval,
                        }
                    )
                    + "\n"
                )
    del state


if __name__ == "__main__":
    main()
