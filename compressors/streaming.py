"""Layer-by-layer streaming compression: a checkpoint far larger than memory, one decoder block at a time.

The whole-model path (:func:`compressors.models.load_model` then ``Compressor.compress``) holds every
weight in float32 at once: ~3x the bytes of a bf16 checkpoint, 40 GB for a 7B model. A compressor that
works block by block (``Compressor.block_step`` returns a :class:`compressors.calibration.BlockStep`)
needs only the block it is compressing, so this driver:

1. builds the model from ``config.json`` on the **meta device** (no memory: shapes only), and maps
   every parameter to its tensor in the safetensors shards (transformers' renamings included);
2. for a calibrated method, materialises only what runs before block 0 (embeddings, rotary tables) in
   float32, computes block 0's inputs for the calibration windows, and frees it again;
3. for each block: materialises it (``Module.to_empty``) on the compute device, copies its tensors in
   from the shards (read with ``safetensors.safe_open``, memory-mapped, in the checkpoint's dtype; each
   shard is opened for one block's reads and closed again, so no mapping grows with depth), runs the
   method's step (:func:`compressors.calibration.compress_block` or ``compress_block_weights``:
   the very code the whole-model walk runs), appends the block's packed tensors and its dense ones
   (norms, biases) to the output file, and returns the block to the meta device. A calibrated method
   carries the outputs of the **quantized** block to the next block, as GPTQ's sequential mode and
   Shrinkwise's whole-model walk do;
4. copies the remaining dense tensors (embeddings, final norm, an untied head) from the shards one at a
   time, and finishes ``model.safetensors`` (:class:`compressors.storage.SafetensorsStreamWriter`),
   ``config.json``, tokenizer and ``shrinkwise.json``: the same packed format as
   :func:`compressors.storage.save_packed`, which :func:`compressors.storage.load_packed` reads unchanged.

Precision: blocks and activations compute in float32 (:data:`COMPUTE_DTYPE`, as the whole-model path
loads them), so the streamed result equals the whole-model one (bit for bit for the data-free methods,
Wanda and TEAL; the Hessian methods up to float summation order, in practice also bit for bit on one
device); each method's ``block_step`` says where its algorithm needs float32 (Hessians, Cholesky, the
column sweeps). Stored bf16/fp16 tensors are upcast one block at a time; dense tensors are written at
the run's ``dense_dtype``.

Peak memory: one block in float32 (x :data:`compressors.models.STREAM_BLOCK_FACTOR`), the calibration
activations, and the embeddings once; independent of depth
(:func:`compressors.models.streamed_memory_bytes`). ``device``: ``auto``, ``cpu``, ``cuda`` or
``cuda:N``: the block being compressed and its activations sit there; the checkpoint stays on disk and
the output goes to disk block by block (as llm-compressor's sequential pipeline onloads one layer).

What streams today: every compressor that works block by block: RTN, magnitude pruning and dynamic
int8 (data-free: ``BlockStep(solve_weight=...)``), GPTQ, SparseGPT and SpQR (Hessian), Wanda (input
norms), and TEAL's calibration (input magnitudes, nothing replaced: its thresholds go to the config by
``BlockStep.finish``). Dynamic int8 with ``include_lm_head`` and the methods that train, prune by
gradients, hand a whole file to llama.cpp or change no weight need the whole model; each says why
(``Compressor.whole_model_reason``), and :func:`streaming_reason` puts that in the run's log.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compressors.base import (
    Calibration,
    CompressionError,
    Compressor,
    CompressorConfig,
    CostEstimate,
    ModelShape,
    RunContext,
)
from compressors.calibration import (
    BlockStep,
    calibration_tokens,
    check_tokens,
    compress_block,
    compress_block_weights,
)
from compressors.layers import capture_block_inputs, find_blocks, linear_layers
from compressors.models import ModelInfo, ModelLoadError, check_safetensors, checkpoint_names
from compressors.packed import packed_modules

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: Precision of the streamed block and its activations (the whole-model path's load dtype).
COMPUTE_DTYPE = torch.float32
INDEX_FILE = "model.safetensors.index.json"
DEVICE_HELP = "auto (CUDA when available, else the CPU), cpu, cuda or cuda:N"


class StreamingUnsupported(CompressionError):
    """This run cannot stream (method, source or checkpoint layout); the message says why."""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``; ``cuda``; ``cuda:N``."""
    d = (device or "auto").strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if not re.fullmatch(r"cuda(:\d+)?", d):
        raise CompressionError(f"device {device!r} is not known; choose {DEVICE_HELP}")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise CompressionError(
            f"device {device!r}: no CUDA device is available (torch {torch.__version__} is {build}); "
            "use --device cpu or auto"
        )
    index = int(d.split(":")[1]) if ":" in d else 0
    if index >= torch.cuda.device_count():
        raise CompressionError(
            f"device {device!r}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0"
        )
    return torch.device("cuda", index)


def streaming_reason(info: ModelInfo, compressor: Compressor[Any], config: CompressorConfig) -> str | None:
    """Why a run of ``compressor`` on ``info`` cannot stream block by block; None when it can."""
    if compressor.block_step(config) is None:
        return f"{compressor.id} needs the whole model: {compressor.whole_model_reason(config)}"
    if info.source != "folder":
        kind = {"demo": "the demo model", "gguf": "a GGUF file", "packed": "a packed checkpoint"}
        return f"the source is {kind.get(info.source, info.source)}, not a safetensors folder"
    if not info.weight_files or not all(f.endswith(".safetensors") for f in info.weight_files):
        return "the checkpoint's weights are not safetensors"
    return None


#: Linear layers in one decoder block of the common layouts (q, k, v, o, gate, up, down), for estimates
#: made from a model's shape alone
LINEARS_PER_BLOCK = 7


def streamed_peak_bytes(
    compressor: Compressor[Any], config: CompressorConfig, shape: ModelShape, calib: Calibration
) -> int:
    """Peak memory of a run of ``compressor`` streamed block by block
    (:func:`compressors.models.streamed_memory_bytes`), from what its block step does: data-free steps
    hold no activations; calibrated ones hold the windows they use (TEAL: its ``calib_samples`` only) and
    their statistic (Hessians for GPTQ, SparseGPT and SpQR; norms for Wanda; TEAL's samples).
    Raises :class:`StreamingUnsupported` for a method that does not stream."""
    from compressors.models import streamed_memory_bytes

    step = compressor.block_step(config)
    if step is None:
        raise StreamingUnsupported(
            f"{compressor.id} needs the whole model: {compressor.whole_model_reason(config)}"
        )
    if not step.needs_inputs:
        return streamed_memory_bytes(shape)
    samples = calib.samples if step.max_calib_samples is None else min(calib.samples, step.max_calib_samples)
    widest = max(shape.hidden_size, shape.intermediate_size)
    stats: int | None = None
    if step.stat_bytes_per_layer is not None:
        stats = LINEARS_PER_BLOCK * step.stat_bytes_per_layer
    elif step.stat == "sq_norms":
        stats = LINEARS_PER_BLOCK * widest * 4
    return streamed_memory_bytes(shape, samples, calib.seq_len, stats_bytes=stats)


def estimate_run(
    compressor: Compressor[Any], info: ModelInfo, config: CompressorConfig, calib: Calibration
) -> CostEstimate | None:
    """The compressor's estimate for this model, with the peak memory of the path the run will take:
    block by block (:func:`compressors.models.streamed_memory_bytes`) when it streams, else the whole
    model's. None without a model shape."""
    if info.shape is None:
        return None
    est = compressor.estimate(info.shape, config, calib)
    if streaming_reason(info, compressor, config) is not None:
        return est
    return dataclasses.replace(
        est,
        peak_memory_bytes=streamed_peak_bytes(compressor, config, info.shape, calib),
        note=f"streamed block by block from the safetensors shards, peak independent of depth; {est.note}",
    )


# ---------------------------------------------------------------------------------------------------
# reading the shards


class ShardReader:
    """Where every tensor of a safetensors checkpoint lives, and reading a few of them at a time.

    With ``model.safetensors.index.json`` the index is the truth (a shard it names that is missing is an
    error); otherwise every ``*.safetensors`` file's header is read. Headers are checked against the
    file sizes (truncated or corrupt files are refused by name) before anything is read.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.where: dict[str, Path] = {}
        index = self.folder / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise ModelLoadError(
                    f"{index} is not a safetensors index (it needs a 'weight_map' of tensor name -> shard "
                    f"file): {type(exc).__name__}"
                ) from None
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (self.folder / s).is_file()]
            if missing:
                raise ModelLoadError(
                    f"{self.folder}: {len(missing)} of the {len(shards)} shards its {INDEX_FILE} lists are "
                    f"missing, e.g. {missing[0]}. Copy the whole checkpoint folder again (every "
                    "model-*-of-*.safetensors file)."
                )
            headers = {s: check_safetensors(self.folder / s) for s in shards}
            for name, shard in weight_map.items():
                if name not in headers[shard]:
                    raise ModelLoadError(
                        f"{self.folder}: {INDEX_FILE} puts {name} in {shard}, which does not hold it; "
                        "the index and the shards come from different checkpoints"
                    )
                self.where[name] = self.folder / shard
        else:
            files = sorted(self.folder.glob("*.safetensors"))
            if not files:
                raise ModelLoadError(f"{self.folder} has no *.safetensors files to stream from")
            for f in files:
                for name in check_safetensors(f):
                    if name != "__metadata__":
                        self.where[name] = f

    def keys(self) -> list[str]:
        return list(self.where)

    def read(self, names: list[str]) -> dict[str, torch.Tensor]:
        """The tensors ``names`` in their stored dtype, on the CPU. Each shard is opened for this call
        only, so the memory map of what was read is released when the call returns."""
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = defaultdict(list)
        for n in names:
            by_file[self.where[n]].append(n)
        out: dict[str, torch.Tensor] = {}
        for f, group in by_file.items():
            with safe_open(str(f), framework="pt") as st:
                for n in group:
                    out[n] = st.get_tensor(n)
        return out


# ---------------------------------------------------------------------------------------------------
# the driver


def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        fn: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return fn


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Collect garbage and give freed heap memory back to the OS (glibc's ``malloc_trim``).

    glibc keeps freed chunks in its arenas for reuse, and with blocks of mixed-size tensors the process
    grew by about a third of a block per block (measured on 17 MB blocks: RSS 385 -> 421 MB over 8
    blocks); trimmed after every block it stays flat, so the peak does not depend on depth.
    """
    gc.collect()
    if _TRIM is not None:
        _TRIM(0)


@dataclass
class StreamReport:
    """What a streamed compression did."""

    checkpoint_dir: Path
    device: str
    n_blocks: int
    largest_block_bytes: int  # one block in compute precision: what the peak memory is measured against
    seconds: float
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)


def _meta_model(config: PretrainedConfig) -> PreTrainedModel:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model: PreTrainedModel = AutoModelForCausalLM.from_config(
            config, dtype=COMPUTE_DTYPE, trust_remote_code=False
        )
    model.eval()
    return model


def _wanted_names(model: nn.Module) -> list[str]:
    """Every tensor the packed output needs: parameters (a tied one once) and persistent buffers."""
    from compressors.storage import persistent_buffers

    names = [n for n, _ in model.named_parameters()]
    return names + [n for n in persistent_buffers(model) if n not in names]


def _map_names(model: PreTrainedModel, reader: ShardReader, ref: str, blocks_path: str) -> dict[str, str]:
    """``{name in the model: name in the shards}`` for every tensor the output needs, or a clear error."""
    names, converted = checkpoint_names(model, reader.keys())
    if any(n.startswith(blocks_path + ".") for n in converted):
        raise StreamingUnsupported(
            f"{ref}: transformers merges or splits some of its block tensors while loading (e.g. "
            f"{sorted(converted)[0]}), which the streaming reader does not reproduce"
        )
    wanted = _wanted_names(model)
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ModelLoadError(
            f"the weights of {ref} do not match its config.json: {len(missing)} of the {len(wanted)} tensors "
            f"the config needs are in none of its safetensors files, e.g. {missing[0]}. A shard may be "
            "missing, or the config belongs to another model."
        )
    return {n: names[n] for n in wanted}


def _own_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(
        True for _ in module.buffers(recurse=False)
    )


def _shell_modules(model: PreTrainedModel, blocks_path: str) -> dict[str, nn.Module]:
    """The modules outside the blocks that own tensors, except the output head (never run here)."""
    head = model.get_output_embeddings()
    out: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if name == blocks_path or name.startswith(blocks_path + ".") or m is head:
            continue
        if _own_tensors(m):
            out[name] = m
    return out


@torch.no_grad()
def _load_into(
    module: nn.Module, prefix: str, names: dict[str, str], reader: ShardReader, *, recurse: bool = True
) -> None:
    """Copy the shards' tensors of ``module`` (at ``prefix`` in the model) into its materialised tensors."""
    own = [(k, t) for k, t in module.state_dict(keep_vars=True).items() if recurse or "." not in k]
    full = {f"{prefix}{k}": t for k, t in own}
    unmapped = [n for n in full if n not in names]
    if unmapped:  # _map_names covers every tensor of the model; this would leave memory uninitialised
        raise CompressionError(f"no checkpoint tensor is mapped to {unmapped[0]}")
    stored = reader.read([names[n] for n in full])
    for n, t in full.items():
        t.copy_(stored[names[n]])


@torch.no_grad()
def _capture_inputs(
    model: PreTrainedModel,
    shell: dict[str, nn.Module],
    names: dict[str, str],
    reader: ShardReader,
    tokens: torch.Tensor,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Block 0's inputs for the calibration windows, computed with only the modules before it built."""
    from compressors.hf_compat import init_module_buffers

    for name, m in shell.items():
        m.to_empty(device=device, recurse=False)
        init_module_buffers(model, m)  # rotary tables, scales: computed, not stored
        _load_into(m, f"{name}." if name else "", names, reader, recurse=False)
    try:
        return capture_block_inputs(model, tokens)
    finally:
        for m in shell.values():
            m.to_empty(device="meta", recurse=False)
        release_memory()


def stream_compress(
    ref: str | Path,
    compressor: Compressor[Any],
    config: CompressorConfig,
    out_dir: str | Path,
    ctx: RunContext,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    dense_dtype: torch.dtype | None = None,
    device: str | None = None,
    extra: dict[str, Any] | None = None,
) -> StreamReport:
    """Compress the safetensors folder ``ref`` block by block into a packed checkpoint at ``out_dir``.

    ``dense_dtype``: dtype of the tensors left unquantized (None: float32, as the whole-model path stores
    a float32 model). ``device``: see :func:`resolve_device` (default ``ctx.device``). ``extra``: more
    manifest fields. Raises :class:`StreamingUnsupported` when the method or the checkpoint cannot
    stream, :class:`compressors.models.ModelLoadError` for a broken checkpoint (missing shard, tensors
    that do not match the config), :class:`compressors.base.Cancelled` when cancelled (no output file is
    left half-written).
    """
    from compressors.hf_compat import check_version
    from compressors.models import inspect_checkpoint, load_config
    from compressors.storage import (
        WEIGHTS,
        WEIGHTS_METADATA,
        SafetensorsStreamWriter,
        checkpoint_tensors,
        write_manifest,
        write_side_files,
    )

    t_start = time.perf_counter()
    check_version(feature="streaming compression")
    dev = resolve_device(device or ctx.device)
    step: BlockStep | None = compressor.block_step(config)
    if step is None:
        raise StreamingUnsupported(
            f"{compressor.id} needs the whole model: {compressor.whole_model_reason(config)}"
        )
    info = inspect_checkpoint(ref)
    if info.path is None or info.source not in ("folder", "demo"):
        raise StreamingUnsupported(f"{ref}: only a safetensors model folder can be streamed")
    folder = Path(info.path)
    hf_config = load_config(ref)
    if getattr(hf_config, "quantization_config", None):
        raise StreamingUnsupported(f"{ref} is already quantized (its config has a quantization_config)")
    reader = ShardReader(folder)
    model = _meta_model(hf_config)
    blocks_path, blocks = find_blocks(model)
    names = _map_names(model, reader, str(ref), blocks_path)
    dense = dense_dtype or COMPUTE_DTYPE
    n_blocks = len(blocks)

    hidden: torch.Tensor | None = None
    kwargs: dict[str, Any] = {}
    if step.needs_inputs:
        tokens = calibration_tokens(ctx)
        check_tokens(tokens)
        if step.max_calib_samples is not None:
            tokens = tokens[: step.max_calib_samples]
        ctx.report(
            step.stage,
            0.0,
            f"computing the inputs of block 0 for {tokens.shape[0]}×{tokens.shape[1]} calibration tokens "
            f"(embeddings only, on {dev})",
        )
        hidden, kwargs = _capture_inputs(
            model, _shell_modules(model, blocks_path), names, reader, tokens, dev
        )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = SafetensorsStreamWriter(out / WEIGHTS)
    modules: dict[str, dict[str, Any]] = {}
    report = StreamReport(out, str(dev), n_blocks, 0, 0.0)
    all_layers = sum(len(linear_layers(b)) for b in blocks)  # the blocks are still on the meta device
    solved = 0
    try:
        for bi, block in enumerate(blocks):
            ctx.check_cancelled()
            prefix = f"{blocks_path}.{bi}."
            block.to_empty(device=dev)
            _load_into(block, prefix, names, reader)
            block_bytes = sum(t.numel() * t.element_size() for t in block.state_dict().values())
            report.largest_block_bytes = max(report.largest_block_bytes, block_bytes)
            if step.needs_inputs and hidden is not None and step.stat is not None and step.solve is not None:
                hidden, info_by_layer = compress_block(
                    block,
                    bi,
                    n_blocks,
                    hidden,
                    kwargs,
                    step.stat,
                    step.solve,
                    ctx,
                    true_sequential=step.true_sequential,
                    count=(solved, all_layers),
                    make_stats=step.make_stats,
                )
            elif step.solve_weight is not None:
                info_by_layer = compress_block_weights(
                    block, bi, n_blocks, step.solve_weight, ctx, count=(solved, all_layers)
                )
            else:  # BlockStep's own checks make this unreachable
                raise CompressionError(f"{compressor.id}: its block step has no solver")
            for name, t in checkpoint_tensors(block, dense).items():
                writer.add(prefix + name, t)
            for name, m in packed_modules(block).items():
                modules[prefix + name] = {"type": m.packed_type, "meta": m.meta()}
            solved += len(info_by_layer)
            for name, layer_info in info_by_layer.items():
                report.layers[prefix + name] = layer_info
            block.to_empty(device="meta")  # frees the block and its packed layers
            release_memory()
        ctx.report("write", 1.0, "copying the embeddings, final norm and head from the checkpoint")
        block_prefix = blocks_path + "."
        for name, stored_name in names.items():
            if name.startswith(block_prefix):
                continue
            t = reader.read([stored_name])[stored_name]
            writer.add(name, t.to(dense) if t.is_floating_point() else t)
            del t
            release_memory()
        if step.finish is not None:  # e.g. TEAL records its thresholds in the config
            step.finish(model, ctx)
        writer.finish(WEIGHTS_METADATA)
    except BaseException:
        writer.close()
        raise
    generation_config = _generation_config(folder, model)
    write_side_files(
        out,
        model.config,
        generation_config,
        tokenizer,
        architecture=type(model).__name__,
        packed=bool(modules),
    )
    write_manifest(
        out,
        method=compressor.id,
        config=config.to_dict(),
        dense_dtype=None if dense == torch.float32 else dense,
        modules=modules,
        extra={**(extra or {}), "streamed": {"device": str(dev), "blocks": n_blocks}},
    )
    report.seconds = time.perf_counter() - t_start
    return report


def _generation_config(folder: Path, model: PreTrainedModel) -> Any:
    """The checkpoint's ``generation_config.json`` when it has one (what ``from_pretrained`` reads)."""
    if (folder / "generation_config.json").is_file():
        from transformers import GenerationConfig

        try:
            return GenerationConfig.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            log.warning("generation_config.json of %s not read: %s", folder, exc)
    return getattr(model, "generation_config", None)
