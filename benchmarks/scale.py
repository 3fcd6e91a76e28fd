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
import json, sys, time
t0 = time.perf_counter()
from compressors.run import compress_only
r = compress_only(sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), out_dir=sys.argv[4],
                  n_calib_samples=int(sys.argv[5]), calib_seq_len=int(sys.argv[6]), device=sys.argv[7])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(json.dumps({"peak": int(hwm.split()[1]) * 1024, "timings": r.timings, "path": r.path,
                  "wall": time.perf_counter() - t0}))
"""


def run_child(src: Path, method: str, out: Path, calib: int, seq: int, device: str) -> dict:
    """Compress in a fresh process; its own peak RSS (VmHWM) comes back with its timings."""
    cmd = [sys.executable, "-c", _CHILD, str(src), method, json.dumps(METHODS[method]), str(out)]
    cmd += [str(calib), str(seq), device]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{method} on {src.name} failed:\n{proc.stderr[-3000:]}")
    result: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_outer"] = wall
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="135m,1.1b,7b", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--methods", default="rtn,gptq", help="comma-separated, of rtn, gptq")
    ap.add_argument("--calib", type=int, default=4, help="GPTQ calibration windows")
    ap.add_argument("--calib-seq", type=int, default=512, help="tokens per calibration window")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--workdir", default=None, help="where checkpoints are built (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints and outputs")
    ap.add_argument("--out", default=None, help="also write the table (Markdown) to this file")
    args = ap.parse_args()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for s in sizes:
        if s not in SIZES:
            raise SystemExit(f"unknown size {s!r}; choose from {', '.join(SIZES)}")
    for m in methods:
        if m not in METHODS:
            raise SystemExit(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="shrinkwise-scale-"))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
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
        n_params, block_bytes = build_checkpoint(size, src)
        build_s = time.perf_counter() - t
        ckpt_bytes = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        for method in methods:
            out = work / f"out-{size}-{method}"
            load = os.getloadavg()[0]
            r = run_child(src, method, out, args.calib, args.calib_seq, args.device)
            got = (out / "model.safetensors").stat().st_size
            want = theoretical_bytes(size, 4, 128)
            row = (
                f"| {size} | {method} | {n_params / 1e6:.0f} M | {ckpt_bytes / 2**30:.2f} GiB | {build_s:.0f} "
                f"| {r['path']} | {r['peak'] / 2**30:.2f} GiB | {r['wall_outer']:.0f} "
                f"| {r['timings'].get('compress', 0):.0f} | {r['peak'] / block_bytes:.1f} "
                f"| {got / want:.4f} | {load:.1f} |"
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
