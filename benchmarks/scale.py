"""Compression at scale: random-weight Llama checkpoints of growing size, streamed block by block.

Builds a bf16 safetensors checkpoint with the shapes of a real model (random weights: quality means
nothing here, memory and time do), written shard by shard so that building even the 7B one holds one
shard (1 GB) at a time; compresses it with RTN 4-bit and GPTQ 4-bit (few calibration windows) in a
child process each (``compressors.run.compress_only``: the path ``shrinkwise compress --no-measure``
takes), and prints per run:

* peak RSS of the child (its ``VmHWM``: the peak of its own address space) and wall time;
* peak RSS / largest-block bytes (one decoder block in float32, the unit streaming holds);
* output size / theoretical packed size (codes, fp16 scales and packed zero-points of every block
  linear layer, every other tensor in bf16: what the format should take, byte for byte, plus a header);
* the machine's load average when the run started (``uptime``), since timings on a shared machine are
  only indicative.

Checkpoints and outputs are deleted after each size (``--keep`` keeps them)::

    .venv/bin/python benchmarks/scale.py --sizes 135m,1.1b        # 7b too by default: ~13.5 GB on disk
    .venv/bin/python benchmarks/scale.py --sizes 135m --methods rtn --calib 2

``--inference`` measures the *loaded* 4-bit model instead (RTN 4-bit g128 through ``compress_only``)
against the float32 model, for the demo model (``demo``: SmolLM2-135M, real weights) and the random
1.1B checkpoint::

    .venv/bin/python benchmarks/scale.py --inference --sizes demo,1.1b --out benchmarks/results/inference.md

* RAM: each model is loaded in a fresh child process (RSS of two models in one process cannot be told
  apart); the figure is the child's RSS after loading and one short forward (which builds the kernel
  weights) minus its RSS before loading, taken after torch and transformers are imported and a tiny
  Llama has run one forward (and the int4 kernel its probe), so the runtime itself (~0.4 GB of
  libraries, thread pools, kernel workspaces) is not counted for either model; the child's peak
  (VmHWM) is printed too, and the anonymous part of the RSS (``RssAnon``): safetensors are memory-mapped,
  so pages of the file that were read (the packed codes, before the kernel weight replaced them) stay
  in the RSS as clean page cache the kernel can drop under pressure; anonymous memory is what the
  model holds for itself.
* Decode: batch 1, ``--new-tokens`` greedy tokens after a short prompt, float32 and 4-bit alternately
  ``--repeats`` times in ONE process (so both see the same machine load); median tokens/s.
* Perplexity: the 4-bit model on its kernels vs the same packed model dequantized to float32
  (``nn.Linear`` with ``dequantize()``), on the same evaluation windows.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Llama-architecture shapes of three published models (config.json numbers).
SIZES: dict[str, dict[str, object]] = {
    # SmolLM2-135M (the demo model's shapes)
    "135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    # TinyLlama-1.1B
    "1.1b": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        vocab_size=32000,
        tie_word_embeddings=False,
    ),
    # Llama-2-7B
    "7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        tie_word_embeddings=False,
    ),
}
METHODS = {"rtn": {"bits": 4, "group_size": 128}, "gptq": {"bits": 4, "group_size": 128}}
SHARD_BYTES = 2**30


def _config(size: str):  # -> LlamaConfig
    from transformers import LlamaConfig

    return LlamaConfig(
        **SIZES[size], max_position_embeddings=2048, bos_token_id=0, eos_token_id=0, dtype="bfloat16"
    )


def _checkpoint_sizes(size: str) -> tuple[int, int]:
    """(parameters, bytes of one decoder block in float32) of ``size``, from its config alone."""
    import torch
    from transformers import AutoModelForCausalLM

    from compressors.layers import find_blocks

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(_config(size), dtype=torch.bfloat16)
    _, blocks = find_blocks(meta)
    return sum(p.numel() for p in meta.parameters()), sum(p.numel() for p in blocks[0].parameters()) * 4


def build_checkpoint(size: str, folder: Path) -> tuple[int, int]:
    """Write a random bf16 checkpoint of ``size`` into ``folder``, one shard (<= 1 GiB) in memory at a
    time; returns (parameters, bytes of one decoder block in float32). Norm weights are ones, every
    other tensor N(0, 0.02)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    from compressors.layers import find_blocks

    sys.path.insert(0, str(REPO / "tests" / "compressors"))
    from tiny import tiny_tokenizer  # the project's deterministic byte-level BPE (ids < 320)

    config = _config(size)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = dict(meta.named_parameters())  # a tied head once
    groups: list[list[str]] = [[]]
    filled = 0
    for name, p in params.items():
        if filled and filled + p.numel() * 2 > SHARD_BYTES:
            groups.append([])
            filled = 0
        groups[-1].append(name)
        filled += p.numel() * 2
    folder.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        shard = {}
        for name in group:
            shape = params[name].shape
            if name.endswith("norm.weight"):
                shard[name] = torch.ones(shape, dtype=torch.bfloat16)
            else:
                shard[name] = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
            weight_map[name] = fname
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        del shard
    total = sum(p.numel() * 2 for p in params.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1)
    )
    config.architectures = ["LlamaForCausalLM"]
    config.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    _, blocks = find_blocks(meta)
    block_bytes = sum(p.numel() for p in blocks[0].parameters()) * 4
    return sum(p.numel() for p in params.values()), block_bytes


def theoretical_bytes(size: str, bits: int, group_size: int) -> int:
    """The packed format's data size: every block linear layer's packed codes, fp16 scales and packed
    asymmetric zero-points; every other tensor (embeddings, norms, head) in bf16."""
    import torch
    from transformers import AutoModelForCausalLM

    from compressors.layers import find_blocks, linear_layers

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(_config(size), dtype=torch.bfloat16)
    path, blocks = find_blocks(meta)
    linear = {
        f"{path}.{i}.{n}.weight": tuple(m.weight.shape)
        for i, b in enumerate(blocks)
        for n, m in linear_layers(b).items()
    }
    total = 0
    for name, p in meta.named_parameters():
        if name in linear:
            out_f, in_f = linear[name]
            groups = math.ceil(in_f / group_size)
            total += math.ceil(out_f * in_f / 32) * bits * 4  # codes, 32 per `bits` words
            total += out_f * groups * 2  # fp16 scales
            total += math.ceil(out_f * groups / 32) * bits * 4  # integer zero-points, packed
        else:
            total += p.numel() * 2
    return total


_CHILD = """
import json, sys, threading, time
t0 = time.perf_counter()
import compressors.streaming as streaming
from compressors.base import Cancelled
from compressors.run import compress_only
# --max-blocks: stop (through the run's own cancel) once that many decoder blocks are compressed; the
# peak is one block's whatever the depth, so the first blocks measure it, and their time projects the rest
max_blocks, done, stamps = int(sys.argv[8]), [0], []
cancel = threading.Event()
for name in ("compress_block", "compress_block_weights"):
    real = getattr(streaming, name)
    def counted(*a, _real=real, **k):
        out = _real(*a, **k)
        done[0] += 1
        stamps.append(time.perf_counter())
        if max_blocks and done[0] >= max_blocks:
            cancel.set()
        return out
    setattr(streaming, name, counted)
timings, path = {}, "streamed block by block"
try:
    r = compress_only(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), out_dir=sys.argv[4],
                      n_calib_samples=int(sys.argv[5]), calib_seq_len=int(sys.argv[6]), device=sys.argv[7],
                      cancel_event=cancel)
    timings, path = r.timings, r.path
except Cancelled:
    pass
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
per_block = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None
print(json.dumps({"peak": int(hwm.split()[1]) * 1024, "timings": timings, "path": path,
                  "wall": time.perf_counter() - t0, "blocks_done": done[0], "per_block_s": per_block}))
"""


def run_child(
    src: Path, method: str, out: Path, calib: int, seq: int, device: str, max_blocks: int = 0
) -> dict:
    """Compress in a fresh process; its own peak RSS (VmHWM) comes back with its timings.
    ``max_blocks`` > 0 stops after that many blocks (see ``--max-blocks``)."""
    cmd = [sys.executable, "-c", _CHILD, str(src), method, json.dumps(METHODS[method]), str(out)]
    cmd += [str(calib), str(seq), device, str(max_blocks)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{method} on {src.name} failed:\n{proc.stderr[-3000:]}")
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_outer"] = wall
    return result


_RSS_CHILD = """
import gc, json, sys
import torch, transformers  # the runtime, counted in the baseline
from compressors.evaluate import model_memory_bytes
def status(key):
    return int([l for l in open("/proc/self/status") if l.startswith(key)][0].split()[1]) * 1024
torch.set_num_threads(int(sys.argv[3]))
# warm the runtime first: a first forward maps library code and sets up thread pools and kernel
# workspaces (~100 MB here), which is the runtime's RAM, not the model's
from transformers import AutoModelForCausalLM, LlamaConfig
from compressors import kernels
kernels.kernel_available("int4", "cpu")  # the probe runs the int4 kernel once
cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=320)
tiny = AutoModelForCausalLM.from_config(cfg).eval()
with torch.no_grad():
    tiny(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]))
del tiny
gc.collect()
base, anon_base = status("VmRSS:"), status("RssAnon:")
if sys.argv[1] == "packed":
    from compressors.storage import load_packed
    model = load_packed(sys.argv[2])
else:
    from compressors.models import load_model
    model, _ = load_model(sys.argv[2], dtype=torch.float32, with_tokenizer=False)
model.eval()
with torch.no_grad():
    model(torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]))
gc.collect()
print(json.dumps({"base": base, "rss": status("VmRSS:"), "hwm": status("VmHWM:"),
                  "anon_base": anon_base, "anon": status("RssAnon:"), "tensors": model_memory_bytes(model)}))
"""


def rss_child(kind: str, ref: str, threads: int) -> dict:
    """RSS of one loaded model (``kind`` "float" or "packed") in a fresh process; see the docstring."""
    cmd = [sys.executable, "-c", _RSS_CHILD, kind, ref, str(threads)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO
    )
    if proc.returncode != 0:
        raise SystemExit(f"loading {kind} {ref} failed:\n{proc.stderr[-3000:]}")
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _dequantized_copy(model):  # -> PreTrainedModel
    """The packed model with every packed layer replaced by a float32 ``nn.Linear`` of ``dequantize()``."""
    import copy

    import torch

    from compressors.layers import set_module
    from compressors.packed import packed_modules

    ref = copy.deepcopy(model)
    for path, m in packed_modules(ref).items():
        lin = torch.nn.Linear(m.in_features, m.out_features, bias=getattr(m, "bias", None) is not None)
        with torch.no_grad():
            lin.weight.copy_(m.dequantize())
            if lin.bias is not None:
                lin.bias.copy_(m.bias.float())
        set_module(ref, path, lin)
    return ref.eval()


def _decode_tps(model, prompt, new_tokens: int) -> float:
    import torch

    with torch.no_grad():
        t = time.perf_counter()
        out = model.generate(
            prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0
        )
        dt = time.perf_counter() - t
    assert out.shape[1] == prompt.shape[1] + new_tokens
    return new_tokens / dt


def inference_rows(args: argparse.Namespace, sizes: list[str], work: Path) -> list[str]:
    """``--inference``: RAM, decode speed and perplexity of the loaded 4-bit model vs float32."""
    import statistics

    import torch

    from compressors.evaluate import perplexity
    from compressors.models import load_model
    from compressors.packed import packed_modules
    from compressors.run import compress_only
    from compressors.storage import load_packed
    from compressors.text import default_split, eval_windows

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    lines = [
        f"Inference: RTN 4-bit g128 (compress_only) vs float32; torch {torch.__version__}, {threads} threads; "
        f"decode: batch 1, {args.new_tokens} greedy tokens, float32/4-bit alternately x{args.repeats}; "
        f"perplexity: {args.ppl_windows}x{args.ppl_seq} tokens of the held-out text",
        "",
        "| model | float32 RSS | 4-bit RSS | ratio | anon RSS f32 / 4-bit (ratio) | tensors f32 / 4-bit (ratio) "
        "| peak RSS f32 / 4-bit | decode f32 tok/s | decode 4-bit tok/s "
        "| speed-up | ppl dequantized | ppl kernel | ppl diff | kernel layers | load avg (1/5/15 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    results = []
    for size in sizes:
        if size == "demo":
            src_ref = "demo"
        else:
            src = work / f"llama-{size}"
            build_checkpoint(size, src)
            src_ref = str(src)
        out = work / f"out-{size}-rtn-inference"
        compress_only(src_ref, "rtn", dict(METHODS["rtn"]), out_dir=out, device="cpu")
        loads = [os.getloadavg()]
        ram_f = rss_child("float", src_ref, threads)
        ram_q = rss_child("packed", str(out), threads)
        loads.append(os.getloadavg())
        model_f, tok = load_model(src_ref, dtype=torch.float32)
        model_q = load_packed(out).eval()
        prompt = torch.tensor([tok("The quick brown fox jumps over the lazy dog. " * 2)["input_ids"][:16]])
        _decode_tps(model_q, prompt, 4)  # builds the kernel weights; warms both
        _decode_tps(model_f, prompt, 4)
        kernel_layers = sum(m.kernel is not None for m in packed_modules(model_q).values())
        n_layers = len(packed_modules(model_q))
        tps_f: list[float] = []
        tps_q: list[float] = []
        for _ in range(args.repeats):
            tps_f.append(_decode_tps(model_f, prompt, args.new_tokens))
            tps_q.append(_decode_tps(model_q, prompt, args.new_tokens))
        loads.append(os.getloadavg())
        del model_f
        windows = eval_windows(tok, default_split().evaluation, args.ppl_windows, args.ppl_seq)
        ppl_q = perplexity(model_q, windows)
        model_d = _dequantized_copy(model_q)
        ppl_d = perplexity(model_d, windows)
        del model_d, model_q
        loads.append(os.getloadavg())
        mf, mq = statistics.median(tps_f), statistics.median(tps_q)
        d_f, d_q = ram_f["rss"] - ram_f["base"], ram_q["rss"] - ram_q["base"]
        a_f, a_q = ram_f["anon"] - ram_f["anon_base"], ram_q["anon"] - ram_q["anon_base"]
        load_s = ", ".join("/".join(f"{v:.1f}" for v in la) for la in loads)
        row = (
            f"| {size} | {d_f / 2**20:.0f} MiB | {d_q / 2**20:.0f} MiB | {d_q / d_f:.2f} "
            f"| {a_f / 2**20:.0f} / {a_q / 2**20:.0f} MiB ({a_q / a_f:.2f}) "
            f"| {ram_f['tensors'] / 2**20:.0f} / {ram_q['tensors'] / 2**20:.0f} MiB "
            f"({ram_q['tensors'] / ram_f['tensors']:.2f}) "
            f"| {ram_f['hwm'] / 2**20:.0f} / {ram_q['hwm'] / 2**20:.0f} MiB | {mf:.1f} | {mq:.1f} | {mq / mf:.2f}x "
            f"| {ppl_d:.3f} | {ppl_q:.3f} | {100 * (ppl_q / ppl_d - 1):+.2f}% | {kernel_layers}/{n_layers} "
            f"| {load_s} |"
        )
        lines.append(row)
        print(row, flush=True)
        results.append(
            dict(
                model=size,
                threads=threads,
                ram_float=ram_f,
                ram_packed=ram_q,
                rss_ratio=d_q / d_f,
                decode_float_tps=tps_f,
                decode_packed_tps=tps_q,
                speedup=mq / mf,
                ppl_dequantized=ppl_d,
                ppl_kernel=ppl_q,
                kernel_layers=kernel_layers,
                packed_layers=n_layers,
                loadavg=loads,
            )
        )
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
            if size != "demo":
                shutil.rmtree(work / f"llama-{size}", ignore_errors=True)
    if args.out:
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="135m,1.1b,7b", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--methods", default="rtn,gptq", help="comma-separated, of rtn, gptq")
    ap.add_argument("--calib", type=int, default=4, help="GPTQ calibration windows")
    ap.add_argument("--calib-seq", type=int, default=512, help="tokens per calibration window")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--workdir", default=None, help="where checkpoints are built (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints and outputs")
    ap.add_argument(
        "--max-blocks",
        type=int,
        default=0,
        help="stop each run after this many decoder blocks (peak RSS is one block's, so it is measured "
        "all the same; the wall time is projected from the time per block). 0: the whole model",
    )
    ap.add_argument(
        "--reuse", action="store_true", help="use a checkpoint already in --workdir instead of building it"
    )
    ap.add_argument("--out", default=None, help="also write the table (Markdown) to this file")
    ap.add_argument(
        "--inference", action="store_true", help="RAM/decode/perplexity of the loaded 4-bit model"
    )
    ap.add_argument("--new-tokens", type=int, default=64, help="--inference: greedy tokens per decode run")
    ap.add_argument("--repeats", type=int, default=3, help="--inference: decode runs per model")
    ap.add_argument("--ppl-windows", type=int, default=4, help="--inference: perplexity windows")
    ap.add_argument("--ppl-seq", type=int, default=256, help="--inference: tokens per perplexity window")
    ap.add_argument("--threads", type=int, default=0, help="--inference: torch threads (0: torch's default)")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for s in sizes:
        if s not in SIZES and not (args.inference and s == "demo"):
            raise SystemExit(f"unknown size {s!r}; choose from {', '.join(SIZES)}")
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="shrinkwise-scale-"))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if args.inference:
        lines = [f"Machine: {os.cpu_count()} CPUs; start: {uptime}", ""]
        print(lines[0], flush=True)
        lines += inference_rows(args, sizes, work)
        end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        lines += ["", f"End: {end}"]
        print(f"\nEnd: {end}")
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
        if args.out:
            Path(args.out).write_text("\n".join(lines) + "\n")
        return
    lines = [
        f"Machine: {os.cpu_count()} CPUs; start: {uptime}",
        f"Calibration (GPTQ): {args.calib}×{args.calib_seq} tokens; device {args.device}; 4-bit, group 128",
        "",
        "| model | method | params | checkpoint | build s | path | peak RSS | wall s | compress s "
        "| peak RSS / largest block | output / theoretical | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for size in sizes:
        src = work / f"llama-{size}"
        t = time.perf_counter()
        if args.reuse and (src / "model.safetensors.index.json").is_file():
            n_params, block_bytes = _checkpoint_sizes(size)
        else:
            n_params, block_bytes = build_checkpoint(size, src)
        build_s = time.perf_counter() - t
        ckpt_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        for method in methods:
            out = work / f"out-{size}-{method}"
            load = os.getloadavg()[0]
            r = run_child(src, method, out, args.calib, args.calib_seq, args.device, args.max_blocks)
            n_blocks = int(SIZES[size]["num_hidden_layers"])  # type: ignore[call-overload]
            if r["blocks_done"] < n_blocks:  # --max-blocks: no whole output; project the time
                per = r["per_block_s"] or r["wall"] / max(r["blocks_done"], 1)
                path = (
                    f"{r['path']}: stopped after {r['blocks_done']} of {n_blocks} blocks, {per:.0f} s/block"
                )
                wall, compress, ratio = f"~{per * n_blocks:.0f} (projected)", "—", "—"
            else:
                got = (out / "model.safetensors").stat().st_size
                path, wall = r["path"], f"{r['wall_outer']:.0f}"
                compress, ratio = (
                    f"{r['timings'].get('compress', 0):.0f}",
                    f"{got / theoretical_bytes(size, 4, 128):.4f}",
                )
            row = (
                f"| {size} | {method} | {n_params / 1e6:.0f} M | {ckpt_bytes / 2**30:.2f} GiB | {build_s:.0f} "
                f"| {path} | {r['peak'] / 2**30:.2f} GiB | {wall} | {compress} | {r['peak'] / block_bytes:.1f} "
                f"| {ratio} | {load:.1f} |"
            )
            lines.append(row)
            print(row, flush=True)
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(src, ignore_errors=True)
    if not args.keep and not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    lines += ["", f"End: {end}"]
    print(f"\nEnd: {end}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
