"""Method x export format x engine: the perplexity Shrinkwise measured and the one the engine measures.

For each setting the demo model (SmolLM2-135M-Instruct) is compressed once; then, on the same held-out
windows:

* Shrinkwise's perplexity of the compressed model (:func:`compressors.evaluate.perplexity`);
* llama.cpp's perplexity of the GGUF export (llama-cpp-python, CPU), when the result has one;
* plain ``transformers`` ``from_pretrained`` of the compressed-tensors export, when it has one;
* vLLM serving the compressed-tensors export, only where ``vllm`` and a CUDA GPU exist (otherwise the
  row says so; nothing is estimated).

::

    .venv/bin/python benchmarks/engines.py                 # 8 x 512 eval windows, 32 x 512 calibration
    .venv/bin/python benchmarks/engines.py --windows 4 --calib 16

Writes ``benchmarks/results/engines.md`` and ``engines.json`` and prints the table, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("rtn", {"bits": 4, "group_size": 64, "sym": True}),
    ("rtn", {"bits": 4, "group_size": 64}),
    ("gptq", {"bits": 4, "group_size": 64, "sym": True}),
    ("gptq", {"bits": 4, "group_size": 64}),
    ("rtn", {"bits": 8, "group_size": -1, "sym": True}),
    ("gguf-kquant", {"type": "Q4_K_M", "imatrix": True}),
    ("gguf-kquant", {"type": "Q4_K_M", "imatrix": False}),
]


def _vllm_perplexity(folder: Path, windows: Any) -> tuple[float | None, str]:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return None, "vllm not installed"
    if not torch.cuda.is_available():
        return None, "no CUDA GPU"
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(folder), max_model_len=int(windows.shape[1]) + 1, enforce_eager=True)
    params = SamplingParams(max_tokens=1, prompt_logprobs=0)
    import math

    nll, count = 0.0, 0
    for row in windows.tolist():
        out = llm.generate({"prompt_token_ids": row}, params)[0]
        for tok, lp in zip(row[1:], out.prompt_logprobs[1:], strict=True):
            nll -= lp[tok].logprob
            count += 1
    return math.exp(nll / count), "vllm"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engines"))
    args = ap.parse_args()

    import torch

    from compressors.base import RunContext, get_compressor
    from compressors.demo import demo_gguf_path
    from compressors.engines import llama_cpp_perplexity, transformers_perplexity
    from compressors.evaluate import perplexity
    from compressors.export import ExportUnsupported, export_compressed_tensors
    from compressors.gguf_export import GGUFUnsupported, export_gguf
    from compressors.models import load_model
    from compressors.text import calibration_windows, eval_windows, resolve_texts, tokenize

    torch.manual_seed(0)
    texts = resolve_texts(None, None)
    rows: list[dict[str, Any]] = []
    base, tok = load_model("demo")
    windows = eval_windows(tok, texts.evaluation, args.windows, 512)
    calib = calibration_windows(
        tok, texts.calibration, args.calib, 512, 0, ids=tokenize(tok, texts.calibration)
    )
    with torch.no_grad():
        original = perplexity(base, windows)
    original_llama = llama_cpp_perplexity(demo_gguf_path(), windows)
    del base
    for method, cfg in SETTINGS:
        model, _ = load_model("demo", with_tokenizer=False)
        comp = get_compressor(method)
        config = comp.config_cls.from_dict(cfg)
        t = time.perf_counter()
        ctx = RunContext(calibration=calib if comp.uses_calibration(config) else None)
        model = comp.compress(model, tok, config, ctx)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            ours = perplexity(model, windows)
        label = f"{method} " + ",".join(f"{k}={v}" for k, v in cfg.items())
        with tempfile.TemporaryDirectory() as tmp:
            try:
                g = export_gguf(model, tok, Path(tmp) / "m.gguf", source_gguf=demo_gguf_path())
                rows.append(
                    {
                        "setting": label,
                        "format": f"GGUF {g.qtype}",
                        "engine": "llama.cpp (llama-cpp-python)",
                        "shrinkwise": ours,
                        "engine_ppl": llama_cpp_perplexity(g.path, windows),
                        "size_mb": g.path.stat().st_size / 1e6,
                        "compress_s": seconds,
                        "note": g.note,
                    }
                )
            except GGUFUnsupported as exc:
                rows.append(
                    {"setting": label, "format": "GGUF", "engine": "-", "shrinkwise": ours, "note": str(exc)}
                )
            try:
                folder = export_compressed_tensors(model, tok, Path(tmp) / "ct")
                size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
                rows.append(
                    {
                        "setting": label,
                        "format": "compressed-tensors",
                        "engine": "transformers from_pretrained",
                        "shrinkwise": ours,
                        "engine_ppl": transformers_perplexity(folder, windows),
                        "size_mb": size,
                        "compress_s": seconds,
                    }
                )
                vppl, why = _vllm_perplexity(folder, windows)
                rows.append(
                    {
                        "setting": label,
                        "format": "compressed-tensors",
                        "engine": "vLLM",
                        "shrinkwise": ours,
                        "engine_ppl": vppl,
                        "note": "" if vppl is not None else f"not measured: {why}",
                    }
                )
            except ExportUnsupported as exc:
                rows.append(
                    {
                        "setting": label,
                        "format": "compressed-tensors",
                        "engine": "-",
                        "shrinkwise": ours,
                        "note": str(exc),
                    }
                )
        print(rows[-1]["setting"], "done", flush=True)

    load = os.getloadavg()
    lines = [
        f"# Exports measured by their engines (demo model, {args.windows} x 512 held-out windows)",
        "",
        f"Original model: Shrinkwise {original:.3f}, llama.cpp on the shipped Q4_1 GGUF {original_llama:.3f}.",
        f"Load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores).",
        "",
        "| setting | format | engine | Shrinkwise ppl | engine ppl | diff | size MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r.get("engine_ppl")
        diff = f"{(e - r['shrinkwise']) / r['shrinkwise'] * 100:+.2f}%" if e else "-"
        size = f"{r['size_mb']:.1f}" if r.get("size_mb") else "-"
        lines.append(
            f"| {r['setting']} | {r['format']} | {r['engine']} | {r['shrinkwise']:.3f} | "
            f"{f'{e:.3f}' if e else r.get('note', '-')[:80]} | {diff} | {size} |"
        )
    text = "\n".join(lines)
    print(text)
    Path(args.out + ".md").write_text(text + "\n")
    Path(args.out + ".json").write_text(
        json.dumps({"original": original, "rows": rows, "load": load}, indent=2)
    )


if __name__ == "__main__":
    main()
