"""One call that loads a model, measures it, compresses it, saves it packed and measures the result.

This is the API the CLI (``shrinkwise compress``) and the web page's job worker call::

    from compressors.run import compress_and_measure
    result = compress_and_measure("demo", "rtn", {"bits": 4, "group_size": 128}, out_dir="runs/rtn4",
                                  progress=lambda stage, frac, msg: print(stage, frac, msg))
    result.after.perplexity, result.artifacts.checkpoint_dir

Stages reported through ``progress(stage, fraction, message)`` with ``fraction`` over the whole run:
``load`` (0-5%), ``measure before`` (5-20%), the compressor's own stages such as ``calibrate`` and
``layer 3/30`` (20-75%), ``save`` (75-80%), ``measure after`` (80-97%), ``export`` (97-100%).
Stages that count what they do (evaluation windows, layers, files) report it, and the reporter shows
``"measure after — 12/20 windows, ETA 00:41"`` (:mod:`compressors.progress`). Before the run,
:func:`estimate_stages` says how long each of :data:`RUN_STAGES` should take; the run records that
estimate with its result, next to the measured ``timings``, so the result page can compare them.
Setting ``cancel_event`` stops the run at the next check (every evaluation window, every compressed
layer) and raises :class:`compressors.base.Cancelled`; the output folder is left as it was at that point.

The "after" figures are measured on the model **loaded back from the saved packed checkpoint**, so
what is reported is exactly what was stored.
"""

from __future__ import annotations

import gc
import json
import logging
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from compressors.base import (
    Calibration,
    CompressionError,
    Compressor,
    CompressorConfig,
    CompressorId,
    ConfigError,
    CostEstimate,
    ModelShape,
    RunContext,
    check_pairing,
    default_method,
    get_compressor,
)
from compressors.evaluate import (
    DEFAULT_DECODE_TOKENS,
    DEFAULT_PREFILL_LEN,
    EvalResult,
    _RssSampler,
    evaluate,
)
from compressors.models import (
    ModelInfo,
    ModelLoadError,
    check_memory,
    inspect_checkpoint,
    load_model,
    load_tokenizer,
)
from compressors.progress import Count, ProgressSink, Reporter
from compressors.text import (
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_EVAL_WINDOWS,
    DEFAULT_SEQ_LEN,
    TextSplit,
    calibration_windows,
    resolve_texts,
)
from compressors.throughput import Throughput, Work, forward_work, get_throughput
from knowledge.ids import MethodId

if TYPE_CHECKING:
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

Progress = ProgressSink

# fraction of the whole run at which each stage starts
_STAGES = {
    "load": 0.0,
    "measure before": 0.05,
    "compress": 0.20,
    "save": 0.75,
    "measure after": 0.80,
    "export": 0.97,
    "done": 1.0,
}


#: The stages a run times (``RunResult.timings``) and the pre-run estimate covers, in order.
RUN_STAGES = ("load", "measure before", "compress", "save", "measure after", "export")
#: torch ops of the harness around each window / generated token (logits, loss, sampling, hooks)
WINDOW_OPS = 50
TOKEN_OPS = 200
#: Python work per weight tensor when a checkpoint is loaded (module construction, name mapping,
#: checks) and saved (packing into the state dict, headers), in units of one small torch op: a warm
#: load of the demo model (272 tensors) took 0.7 s at the probe's 2.5 µs per op on the development VM.
LOAD_OPS_PER_TENSOR = 1000
SAVE_OPS_PER_TENSOR = 300
#: Bytes per weight of the model the measurements run on (load_model's float32).
MEASURE_DTYPE_BYTES = 4


def evaluate_work(
    shape: ModelShape,
    windows: int,
    seq_len: int,
    *,
    measure_speed: bool = True,
    prefill_len: int = DEFAULT_PREFILL_LEN,
    decode_tokens: int = DEFAULT_DECODE_TOKENS,
    new_tokens: int = 32,
    repeats: int = 2,
) -> Work:
    """Operations of one :func:`compressors.evaluate.evaluate`: the perplexity windows (2 FLOPs per
    parameter per token plus attention over the window), the speed test (prefill passes; decoded tokens,
    each of which reads every weight once) and the greedy generation (like decoded tokens)."""
    from compressors.methods.layerwise import BLOCK_FORWARD_OPS

    # the measurement runs on the model as load_model reads it: float32, whatever the checkpoint stores
    L, model_bytes = shape.n_layers, shape.n_params * MEASURE_DTYPE_BYTES
    per_token_ops = BLOCK_FORWARD_OPS * L + TOKEN_OPS

    def decode(tokens: int) -> Work:  # memory-bound: the weights are read once per token
        return Work(bytes_moved=float(tokens * model_bytes), small_ops=float(tokens * per_token_ops))

    tokens = windows * seq_len
    work = forward_work(shape.n_params, tokens, MEASURE_DTYPE_BYTES) + Work(
        matmul_flops=2.0 * tokens * seq_len * shape.hidden_size * L,
        small_ops=float(windows * (BLOCK_FORWARD_OPS * L + WINDOW_OPS)),
    )
    if measure_speed:
        work = work + forward_work(shape.n_params, repeats * prefill_len, MEASURE_DTYPE_BYTES)
        work = work + decode(repeats * decode_tokens)
    return work + decode(new_tokens)


def estimate_stages(
    shape: ModelShape,
    compress_seconds: float,
    *,
    size_on_disk_bytes: int | None = None,
    eval_windows: int = DEFAULT_EVAL_WINDOWS,
    eval_seq_len: int = DEFAULT_SEQ_LEN,
    measure_before: bool = True,
    before_seconds: float | None = None,
    measure_speed: bool = True,
    export: bool = True,
    throughput: Throughput | None = None,
) -> dict[str, float]:
    """Seconds each of :data:`RUN_STAGES` is expected to take, and their ``"total"``.

    ``compress_seconds`` is the compressor's own estimate. The other stages are operation counts from the
    model's shape (:func:`evaluate_work`; loading, saving and exporting as passes over the weights)
    divided by this machine's measured throughput, except where this machine has measured the very work
    already: ``before_seconds``, the original's measurement on the same files, text and windows kept by
    :mod:`compressors.measure_cache`, means "measure before" is reused (0 s) and "measure after", the
    same evaluation of the compressed model, takes about as long.
    """
    tp = throughput or get_throughput()
    model_bytes = float(shape.n_params * shape.dtype_bytes)
    tensors = 9 * shape.n_layers + 3  # a Llama-style block's weights and norms, plus embedding, norm, head
    load = Work(
        bytes_moved=3 * model_bytes + float(size_on_disk_bytes or model_bytes),
        small_ops=float(LOAD_OPS_PER_TENSOR * tensors),
    )
    save = Work(bytes_moved=3 * model_bytes, small_ops=float(SAVE_OPS_PER_TENSOR * tensors))
    measure = evaluate_work(shape, eval_windows, eval_seq_len, measure_speed=measure_speed).seconds(tp)
    if before_seconds is not None:
        measure = before_seconds
    stages = {
        "load": load.seconds(tp),
        "measure before": 0.0 if (before_seconds is not None or not measure_before) else measure,
        "compress": float(compress_seconds),
        "save": save.seconds(tp),
        # the saved checkpoint is loaded back first
        "measure after": measure + load.seconds(tp),
        # compressed-tensors and the GGUF each write the weights again, as the save did
        "export": 2 * save.seconds(tp) if export else 0.0,
    }
    stages["total"] = sum(stages.values())
    return stages


@dataclass
class Artifacts:
    checkpoint_dir: str
    archive: str | None = None
    export_dir: str | None = None
    export_note: str | None = None  # why there is no export, when there is none
    gguf_path: str | None = None  # model.gguf for llama.cpp, when the result can be written as GGUF
    gguf_type: str | None = None  # its block type, e.g. "Q4_0"
    gguf_note: str | None = None  # what was carried over bit for bit / re-quantized, or why there is none
    report_md: str | None = None
    report_json: str | None = None


def _export_gguf(model: nn.Module, tokenizer: Any, info: ModelInfo, path: Path, artifacts: Artifacts) -> None:
    """Write the GGUF next to the other exports, or record why there is none (never fails the run)."""
    from compressors.gguf_export import GGUFUnsupported, export_gguf

    source: Path | None = None
    if info.source == "gguf" and info.path:
        source = Path(info.path)
    elif info.source == "demo":
        from compressors.demo import demo_gguf_path

        source = demo_gguf_path()
    try:
        done = export_gguf(model, tokenizer, path, source_gguf=source, name=Path(str(info.ref)).name)
    except GGUFUnsupported as exc:
        artifacts.gguf_note = str(exc)
        log.info("no GGUF export: %s", exc)
        return
    artifacts.gguf_path, artifacts.gguf_type, artifacts.gguf_note = str(done.path), done.qtype, done.note


@dataclass
class RunResult:
    """A finished run. ``compressor_id`` is the code that ran, ``method`` the knowledge-base method the
    run is credited to (where its figures are filed): different ids, e.g. "magnitude" runs
    "magnitude-pruning"."""

    model_ref: str
    compressor_id: CompressorId
    method: MethodId
    config: dict[str, Any]
    model_info: dict[str, Any]
    before: EvalResult | None
    after: EvalResult
    timings: dict[str, float]
    artifacts: Artifacts
    estimate: dict[str, Any] | None
    compress_peak_rss_bytes: int
    text_source: str
    calibration_shape: list[int] | None
    log: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # results the user should not miss (e.g. grew)
    evaluation: dict[str, Any] | None = None  # the evaluation windows and why (compressors.eval_budget)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    def changes(self) -> dict[str, float | None]:
        """Relative changes after vs before (perplexity, size, decode speed)."""
        if self.before is None:
            return {}
        b, a = self.before, self.after

        def rel(x: float | None, y: float | None) -> float | None:
            return None if not x or y is None else (y - x) / x

        return {
            "perplexity": rel(b.perplexity, a.perplexity),
            "size_on_disk": rel(b.size_on_disk_bytes, a.size_on_disk_bytes),
            "decode_tokens_per_s": rel(b.decode_tokens_per_s, a.decode_tokens_per_s),
            "prefill_tokens_per_s": rel(b.prefill_tokens_per_s, a.prefill_tokens_per_s),
        }

    def to_markdown(self) -> str:
        return report_markdown(self)


def _mb(x: int | None) -> str:
    return "n/a" if x is None else f"{x / 1e6:.1f} MB"


def comparison_rows(before: EvalResult | None, after: EvalResult) -> list[tuple[str, str, str]]:
    """``(figure, before, after)`` rows shared by the CLI table and the Markdown report."""

    def f(r: EvalResult | None, fn: Callable[[EvalResult], str]) -> str:
        return "n/a" if r is None else fn(r)

    rows = [
        ("perplexity (held-out)", lambda r: f"{r.perplexity:.3f}"),
        ("size on disk", lambda r: _mb(r.size_on_disk_bytes)),
        (
            "bits/weight, compressed layers",
            lambda r: (
                "n/a" if r.bits_per_weight_compressed is None else f"{r.bits_per_weight_compressed:.3f}"
            ),
        ),
        ("bits/weight, whole model", lambda r: f"{r.bits_per_weight_model:.3f}"),
        ("parameters", lambda r: f"{r.n_params:,}"),
        ("sparsity of linear layers", lambda r: f"{100 * r.sparsity:.1f}%"),
        ("prefill tokens/s", lambda r: f"{r.prefill_tokens_per_s:.1f} ({r.prefill_prompt_len} tokens)"),
        ("decode tokens/s", lambda r: f"{r.decode_tokens_per_s:.2f}"),
        ("peak RSS while measuring", lambda r: _mb(r.peak_rss_bytes)),
        ("model tensors in memory", lambda r: _mb(r.model_memory_bytes)),
    ]
    return [(name, f(before, fn), f(after, fn)) for name, fn in rows]


def report_markdown(r: RunResult) -> str:
    lines = [
        f"# Shrinkwise run: {r.compressor_id} ({r.method}) on {r.model_ref}",
        "",
        f"Settings: `{json.dumps(r.config, sort_keys=True)}`  ",
        f"Text: {r.text_source}  ",
        *(
            [
                f"Evaluation: {r.evaluation['windows']} windows of {r.evaluation['seq_len']} tokens, "
                f"{r.evaluation['reason']}  "
            ]
            if r.evaluation
            else []
        ),
        f"Machine: {r.machine.get('platform', '')}, torch {r.machine.get('torch', '')}, "
        f"{r.machine.get('threads', '')} threads",
        "",
        "| figure | before | after |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {b} | {a} |" for n, b, a in comparison_rows(r.before, r.after)]
    ch = r.changes()
    ppl_change = ch.get("perplexity")
    if ppl_change is not None:
        lines += ["", f"Perplexity change: {100 * ppl_change:+.2f}%."]
    lines += ["", "## Timings (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in r.timings.items()]
    lines += ["", "## Greedy generation", "", f"Prompt: {r.after.generation_prompt!r}", ""]
    if r.before is not None:
        lines += [f"- before: {r.before.generation!r}"]
    lines += [f"- after: {r.after.generation!r}", "", "## Files", ""]
    for k, v in asdict(r.artifacts).items():
        if v:
            lines.append(f"- {k}: `{v}`")
    return "\n".join(lines) + "\n"


def describe_gguf_source(before: EvalResult, gguf: Path) -> None:
    """Report a GGUF source as the file the user has, not as its float32 dequantization in memory: its
    size, and its real bits per weight (bytes over parameters: a Q4_K_M is ~4.9, the demo's Q4_1 ~5.5),
    which were shown as 32."""
    before.size_on_disk_bytes = before.weights_file_bytes = gguf.stat().st_size
    before.total_stored_bits = 8 * before.size_on_disk_bytes
    before.bits_per_weight_model = before.total_stored_bits / max(before.n_params, 1)


def _span(prog: Reporter, stage: str, next_stage: str) -> Reporter:
    """The part of the run's progress from ``stage`` to ``next_stage``; its counted reports are shown
    as ``"<stage> — k/n <unit>, ETA mm:ss"``."""
    return prog.span(_STAGES[stage], _STAGES[next_stage], name=stage)


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def compress_and_measure(
    model_ref: str | Path,
    compressor_id: CompressorId,
    config: dict[str, Any] | None = None,
    *,
    method: MethodId | None = None,
    out_dir: str | Path,
    calib_text: str | Path | None = None,
    eval_text: str | Path | None = None,
    progress: Progress | None = None,
    cancel_event: threading.Event | None = None,
    n_calib_samples: int = DEFAULT_CALIB_SAMPLES,
    calib_seq_len: int = DEFAULT_SEQ_LEN,
    eval_windows: int | None = None,
    eval_seq_len: int | None = None,
    measure_before: bool = True,
    reuse_before: bool = True,
    measure_speed: bool = True,
    export: bool = True,
    archive: str | None = "zip",
    seed: int = 0,
    dense_dtype: str = "auto",
    device: str = "auto",
) -> RunResult:
    """Compress ``model_ref`` with compressor ``compressor_id`` and measure before and after.

    ``method``: the knowledge-base method the run is credited to; it must be one the compressor
    implements (``CompressionError`` otherwise); ``None`` means the compressor's own method.

    ``config``: the method's settings as a dict (validated by its config dataclass; unknown keys and
    out-of-range values raise :class:`compressors.base.ConfigError`). ``calib_text``/``eval_text``: a
    ``Path`` is a file, a ``str`` is the text itself, ``None`` the built-in text (see
    :func:`compressors.text.resolve_texts`). ``out_dir`` receives ``model/`` (the packed checkpoint),
    ``model.zip`` (if ``archive``), ``compressed-tensors/`` (if the result can be expressed there),
    ``model.gguf`` (if llama.cpp's block types can hold it), ``report.md`` and ``report.json``.
    ``eval_windows``/``eval_seq_len``: the evaluation windows; None (the default) bounds them by the
    compression's estimate (:mod:`compressors.eval_budget`: 20 x 512 where that is cheap), and the report
    says which were used and why (``RunResult.evaluation``).
    ``reuse_before``: take the original's measurement from an earlier run on the same files, text and
    windows instead of measuring it again (:mod:`compressors.measure_cache`).
    ``dense_dtype``: the dtype of the tensors that stay unquantized
    in the saved checkpoint (see :func:`compressors.storage.resolve_dense_dtype`; ``auto`` keeps the
    source's 16-bit dtype and uses bfloat16 for a GGUF source).
    ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, where a streamed run computes its block and
    activations (see :func:`compressors.streaming.resolve_device`).

    Compression **streams** block by block from the safetensors shards (:mod:`compressors.streaming`)
    when the compressor has a block step (RTN, GPTQ, SparseGPT, Wanda, SpQR, magnitude, dynamic int8, TEAL
    calibration) and the source is a safetensors folder; otherwise
    (GGUF, the demo, a packed checkpoint, a method that needs the whole model) the model is loaded whole.
    The run's log says which path ran and why. The before/after measurements still load the whole model.

    Raises :class:`compressors.models.ModelLoadError`, :class:`compressors.base.ConfigError`,
    :class:`compressors.text.TextTooShort`, :class:`compressors.base.CompressionError` for problems
    the user can fix, and :class:`compressors.base.Cancelled` when ``cancel_event`` is set.
    """
    cancel_event = cancel_event or threading.Event()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # one reporter for the whole run; stages and the compressor report through spans of it, so every
    # line is recorded once. A job passes its own reporter (the row's): the run reports straight into it.
    prog = progress if isinstance(progress, Reporter) else Reporter(progress, cancel_event)
    first_line = len(prog.lines)
    timings: dict[str, float] = {}
    t_run = time.perf_counter()

    # validate everything that can be validated before the slow work
    compressor = get_compressor(compressor_id)
    if method is None:
        method = default_method(compressor_id)
    check_pairing(method, compressor_id)
    cfg = compressor.config_cls.from_dict(dict(config or {}))
    info: ModelInfo = inspect_checkpoint(model_ref)
    compressor.check_model(info.model_type)  # before loading: an unsupported architecture fails at once
    from compressors.storage import resolve_dense_dtype

    try:
        dense = resolve_dense_dtype(dense_dtype, info.source, info.dtype)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    from compressors.streaming import estimate_run, resolve_device, streaming_reason

    dev = resolve_device(device)
    why_whole = streaming_reason(info, compressor, cfg)
    calib_size = Calibration(n_calib_samples, calib_seq_len)
    if why_whole is None and info.shape is not None:
        check_memory(
            info.shape, str(model_ref), streamed_peak_bytes=streamed_peak(compressor, cfg, info, calib_size)
        )
        try:  # the measurements load the whole model: say so now, not after the compression
            check_memory(info.shape, str(model_ref))
        except ModelLoadError as exc:
            raise ModelLoadError(
                f"{exc} Compressing it streams block by block and fits, but measuring it before and after "
                "loads the whole model: compress without measuring (shrinkwise compress ... --no-measure, "
                "or compressors.run.compress_only)."
            ) from None
    estimate: CostEstimate | None = None
    try:
        estimate = estimate_run(compressor, info, cfg, calib_size)
    except Exception as exc:  # an estimate is advisory; it must not block the run
        log.warning("estimate failed for %s: %s", compressor_id, exc)
    texts: TextSplit = resolve_texts(calib_text, eval_text)
    from compressors import measure_cache
    from compressors.eval_budget import plan_for_model

    eval_plan = plan_for_model(
        info,
        None if estimate is None else estimate.seconds,
        texts.evaluation if measure_before and reuse_before else None,
        windows=eval_windows,
        seq_len=eval_seq_len,
        measure_speed=measure_speed,
    )
    eval_windows, eval_seq_len = eval_plan.windows, eval_plan.seq_len
    prog.log(f"evaluation: {eval_plan.describe()}")

    before_key = (
        measure_cache.key(info, texts.evaluation, eval_windows, eval_seq_len, measure_speed)
        if measure_before and reuse_before
        else None
    )
    stages_estimate: dict[str, float] | None = None
    if estimate is not None and info.shape is not None:
        try:
            cached = measure_cache.load(before_key)
            stages_estimate = estimate_stages(
                info.shape,
                estimate.seconds,
                size_on_disk_bytes=info.size_on_disk_bytes,
                eval_windows=eval_windows,
                eval_seq_len=eval_seq_len,
                measure_before=measure_before,
                before_seconds=None if cached is None else cached.seconds,
                measure_speed=measure_speed,
                export=export,
            )
            prog.log("estimate: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages_estimate.items()))
        except Exception as exc:  # advisory, as above
            log.warning("stage estimate failed: %s", exc)

    prog("load", 0.0, f"loading {model_ref}" + ("" if why_whole is None else " (whole model)"))
    t = time.perf_counter()
    model: PreTrainedModel | None = None
    if why_whole is None:
        tokenizer = load_tokenizer(model_ref)  # the weights are read block by block while compressing
    else:
        model, tokenizer = load_model(model_ref)
    timings["load"] = time.perf_counter() - t

    # tokenise early so too-short text fails before any long step
    from compressors.text import eval_windows as _ew
    from compressors.text import tokenize

    _ew(tokenizer, texts.evaluation, eval_windows, eval_seq_len)
    calib = None
    if compressor.uses_calibration(cfg):
        calib = calibration_windows(
            tokenizer,
            texts.calibration,
            n_calib_samples,
            calib_seq_len,
            seed,
            ids=tokenize(tokenizer, texts.calibration),
        )

    # runs on the same files and text at once (a sweep's children) measure the original once: the first
    # measures under the lock, the others wait for it and reuse its measurement (measure_cache.BaselineLock)
    baseline_lock = measure_cache.BaselineLock(before_key).acquire(
        cancel_event, on_wait=lambda: prog.log("waiting for another run's measurement of the original")
    )
    before = None
    if before_key is not None and (before := measure_cache.load(before_key)) is not None:
        timings["measure before"] = 0.0
        prog(
            "measure before",
            _STAGES["compress"],
            f"perplexity {before.perplexity:.3f} (the original's measurement from an earlier run on the same "
            "files and text, reused; its speeds are that run's)",
        )
    elif measure_before:
        t = time.perf_counter()
        span = _span(prog, "measure before", "compress")
        measured = model if model is not None else load_model(model_ref, with_tokenizer=False)[0]
        before = evaluate(
            measured,
            tokenizer,
            texts.evaluation,
            n_windows=eval_windows,
            seq_len=eval_seq_len,
            checkpoint_dir=info.path if info.source in ("demo", "folder", "packed") else None,
            cancel_event=cancel_event,
            progress=lambda s, f, c: span("measure before", f, count=c),
            measure_speed=measure_speed,
        )
        if info.source == "gguf" and info.path:
            describe_gguf_source(before, Path(info.path))
        measure_cache.store(before_key, before)
        del measured
        gc.collect()
        timings["measure before"] = time.perf_counter() - t
        prog("measure before", _STAGES["compress"], f"perplexity {before.perplexity:.3f}")
    baseline_lock.release()

    ctx = RunContext(
        calibration=calib,
        progress=_span(prog, "compress", "save"),
        cancel_event=cancel_event,
        device=str(dev),
        seed=seed,
    )
    extra = {
        "source_model": str(model_ref),
        "source_architecture": info.architecture,
        "knowledge_method": method,  # "method" above is the compressor id, as loaders expect
    }
    with _RssSampler() as rss:
        ckpt = _compress_and_save(
            model_ref,
            compressor,
            cfg,
            model,
            tokenizer,
            ctx,
            out / "model",
            dense,
            extra,
            why_whole,
            timings,
            save_progress=_span(prog, "save", "measure after"),
        )
    model = None
    gc.collect()

    prog("measure after", _STAGES["measure after"], "loading the saved checkpoint back")
    t = time.perf_counter()
    loaded, _ = load_model(ckpt, with_tokenizer=False)
    span = _span(prog, "measure after", "export")
    after = evaluate(
        loaded,
        tokenizer,
        texts.evaluation,
        n_windows=eval_windows,
        seq_len=eval_seq_len,
        checkpoint_dir=ckpt,
        cancel_event=cancel_event,
        progress=lambda s, f, c: span("measure after", f, count=c),
        measure_speed=measure_speed,
    )
    timings["measure after"] = time.perf_counter() - t
    prog("measure after", _STAGES["export"], f"perplexity {after.perplexity:.3f}")
    warnings: list[str] = []
    src_bytes = before.size_on_disk_bytes if before is not None else info.size_on_disk_bytes
    if src_bytes and after.size_on_disk_bytes and after.size_on_disk_bytes > src_bytes:
        dense_name = str(dense).replace("torch.", "")
        warnings.append(
            f"the compressed checkpoint ({after.size_on_disk_bytes / 1e6:.1f} MB) is larger than the input "
            f"({src_bytes / 1e6:.1f} MB): its unquantized tensors (embeddings, norms, output layer) are stored "
            f"in {dense_name}"
            + (", while the input held them quantized too (GGUF)" if info.source == "gguf" else "")
            + (
                "; dense_dtype='bfloat16' halves them"
                if dense == torch.float32
                else "; keep the input as it is, or compress from the original 16-bit checkpoint"
            )
        )
    for w in warnings:
        prog("measure after", _STAGES["export"], f"warning: {w}")

    artifacts = Artifacts(checkpoint_dir=str(ckpt))
    t = time.perf_counter()
    if export:
        export_span = _span(prog, "export", "done")
        export_span("export", 0.0, "exporting to compressed-tensors", count=Count(0, 2, "formats"))
        from compressors.export import ExportUnsupported, export_compressed_tensors

        try:
            artifacts.export_dir = str(
                export_compressed_tensors(loaded, tokenizer, out / "compressed-tensors")
            )
        except ExportUnsupported as exc:
            artifacts.export_note = str(exc)
            log.info("no compressed-tensors export: %s", exc)
        export_span("export", 0.5, "exporting to GGUF (llama.cpp)", count=Count(1, 2, "formats"))
        _export_gguf(loaded, tokenizer, info, out / "model.gguf", artifacts)
        export_span("export", 1.0, count=Count(2, 2, "formats"))
    timings["export"] = time.perf_counter() - t
    del loaded
    gc.collect()
    timings["total"] = time.perf_counter() - t_run

    result = RunResult(
        model_ref=str(model_ref),
        compressor_id=compressor_id,
        method=method,
        config=cfg.to_dict(),
        model_info=info.to_dict(),
        before=before,
        after=after,
        timings=timings,
        artifacts=artifacts,
        estimate=None if estimate is None else {**asdict(estimate), "stages": stages_estimate},
        compress_peak_rss_bytes=rss.peak,
        text_source=texts.source,
        calibration_shape=None if calib is None else list(calib.shape),
        log=prog.lines[first_line:],
        machine=machine_info(),
        warnings=warnings,
        evaluation=eval_plan.to_dict(),
    )
    from compressors.storage import update_manifest

    update_manifest(
        ckpt,
        results={
            "before": None if before is None else before.to_dict(),
            "after": after.to_dict(),
            "timings": timings,
        },
    )
    if archive:
        from compressors.storage import make_archive

        artifacts.archive = str(make_archive(ckpt, archive, out / f"model.{archive}"))
    artifacts.report_json = str(out / "report.json")
    artifacts.report_md = str(out / "report.md")
    Path(artifacts.report_json).write_text(json.dumps(result.to_dict(), indent=2, default=str))
    Path(artifacts.report_md).write_text(result.to_markdown())
    prog("done", 1.0, f"done in {timings['total']:.0f} s")
    result.log = prog.lines[first_line:]
    return result


@dataclass
class CompressOnlyResult:
    """A compression without measurements (:func:`compress_only`)."""

    checkpoint_dir: str
    streamed: bool
    path: str  # which path ran and why, as logged
    timings: dict[str, float]
    peak_rss_bytes: int
    log: list[str] = field(default_factory=list)


def compress_only(
    model_ref: str | Path,
    compressor_id: CompressorId,
    config: dict[str, Any] | None = None,
    *,
    out_dir: str | Path,
    calib_text: str | Path | None = None,
    progress: Progress | None = None,
    cancel_event: threading.Event | None = None,
    n_calib_samples: int = DEFAULT_CALIB_SAMPLES,
    calib_seq_len: int = DEFAULT_SEQ_LEN,
    seed: int = 0,
    dense_dtype: str = "auto",
    device: str = "auto",
) -> CompressOnlyResult:
    """Compress ``model_ref`` into a packed checkpoint at ``out_dir`` without measuring before or after.

    The path for models too large to load whole: a streamed run (a block-wise method on a safetensors folder)
    never holds more than one decoder block, whereas :func:`compress_and_measure` loads the whole model
    to measure it. Same arguments and checks as :func:`compress_and_measure`.
    """
    from compressors.storage import resolve_dense_dtype
    from compressors.streaming import resolve_device, streaming_reason

    cancel_event = cancel_event or threading.Event()
    prog = progress if isinstance(progress, Reporter) else Reporter(progress, cancel_event)
    first_line = len(prog.lines)
    t_run = time.perf_counter()
    compressor = get_compressor(compressor_id)
    cfg = compressor.config_cls.from_dict(dict(config or {}))
    info = inspect_checkpoint(model_ref)
    compressor.check_model(info.model_type)
    try:
        dense = resolve_dense_dtype(dense_dtype, info.source, info.dtype)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    dev = resolve_device(device)
    why_whole = streaming_reason(info, compressor, cfg)
    calib_size = Calibration(n_calib_samples, calib_seq_len)
    if why_whole is None and info.shape is not None:
        check_memory(
            info.shape, str(model_ref), streamed_peak_bytes=streamed_peak(compressor, cfg, info, calib_size)
        )
    timings: dict[str, float] = {}
    t = time.perf_counter()
    prog("load", 0.0, f"loading {model_ref}" + ("" if why_whole is None else " (whole model)"))
    model: PreTrainedModel | None = None
    if why_whole is None:
        tokenizer = load_tokenizer(model_ref)
    else:
        model, tokenizer = load_model(model_ref)
    timings["load"] = time.perf_counter() - t
    calib = None
    if compressor.uses_calibration(cfg):
        from compressors.text import tokenize

        texts = resolve_texts(calib_text, None)
        calib = calibration_windows(
            tokenizer,
            texts.calibration,
            n_calib_samples,
            calib_seq_len,
            seed,
            ids=tokenize(tokenizer, texts.calibration),
        )
    ctx = RunContext(
        calibration=calib,
        progress=prog.span(0.05, 1.0),
        cancel_event=cancel_event,
        device=str(dev),
        seed=seed,
    )
    extra = {
        "source_model": str(model_ref),
        "source_architecture": info.architecture,
        "knowledge_method": default_method(compressor_id),
    }
    with _RssSampler() as rss:
        ckpt = _compress_and_save(
            model_ref, compressor, cfg, model, tokenizer, ctx, Path(out_dir), dense, extra, why_whole, timings
        )
    timings["total"] = time.perf_counter() - t_run
    path = (
        f"streamed block by block on {dev}" if why_whole is None else f"whole model in memory ({why_whole})"
    )
    return CompressOnlyResult(
        checkpoint_dir=str(ckpt),
        streamed=why_whole is None,
        path=path,
        timings=timings,
        peak_rss_bytes=rss.peak,
        log=prog.lines[first_line:],
    )


def streamed_peak(
    compressor: Compressor[Any], cfg: CompressorConfig, info: ModelInfo, calib: Calibration
) -> int:
    """Peak memory of a streamed run of ``compressor`` (see :func:`compressors.streaming.streamed_peak_bytes`)."""
    from compressors.streaming import streamed_peak_bytes

    if info.shape is None:
        return 0
    return streamed_peak_bytes(compressor, cfg, info.shape, calib)


def _compress_and_save(
    model_ref: str | Path,
    compressor: Compressor[Any],
    cfg: CompressorConfig,
    model: PreTrainedModel | None,
    tokenizer: Any,
    ctx: RunContext,
    ckpt_dir: Path,
    dense: torch.dtype,
    extra: dict[str, Any],
    why_whole: str | None,
    timings: dict[str, float],
    save_progress: Reporter | None = None,
) -> Path:
    """The compression stage: streamed block by block into ``ckpt_dir`` when ``why_whole`` is None,
    else ``compressor.compress`` on the loaded ``model`` and :func:`save_packed`. Logs which path ran.
    ``save_progress``: where the save stage reports (the run's "save" span; default the compressor's)."""
    from compressors.storage import save_packed

    if save_progress is None:
        save_progress = ctx.reporter()
    torch.manual_seed(ctx.seed)
    t = time.perf_counter()
    if why_whole is None:
        from compressors.streaming import stream_compress

        ctx.report(
            "compress",
            0.0,
            f"streaming block by block from the safetensors shards on {ctx.device}: one decoder block in "
            "memory at a time, written to the packed checkpoint as it is done",
        )
        report = stream_compress(
            model_ref,
            compressor,
            cfg,
            ckpt_dir,
            ctx,
            tokenizer=tokenizer,
            dense_dtype=None if dense == torch.float32 else dense,
            extra=extra,
        )
        timings["compress"] = time.perf_counter() - t
        timings["save"] = 0.0  # written block by block while compressing
        ctx.report(
            "compress",
            1.0,
            f"streamed {report.n_blocks} blocks on {report.device} in {report.seconds:.1f} s "
            f"(largest block {report.largest_block_bytes / 2**20:.1f} MiB in float32)",
        )
        save_progress("save", 0.0, f"packed checkpoint written block by block to {report.checkpoint_dir}")
        save_progress("save", 1.0, count=Count(1, 1, "files"))
        return report.checkpoint_dir
    if model is None:
        raise CompressionError("internal: the whole-model path needs the loaded model")
    device_note = (
        ""
        if ctx.device == "cpu"
        else f"; device {ctx.device} applies to streamed runs only, this runs on the CPU"
    )
    ctx.report("compress", 0.0, f"whole model in memory ({why_whole}{device_note})")
    compressed: PreTrainedModel | None = compressor.compress(model, tokenizer, cfg, ctx)
    model = compressed if compressed is not None else model
    timings["compress"] = time.perf_counter() - t
    save_progress("save", 1.0, f"saving packed checkpoint to {ckpt_dir}")
    t = time.perf_counter()
    ckpt = save_packed(
        model,
        tokenizer,
        ckpt_dir,
        method=compressor.id,
        config=cfg.to_dict(),
        dense_dtype=None if dense == torch.float32 else dense,
        extra=extra,
        progress=lambda done, total: save_progress("save", 1.0, count=Count(done, total, "files")),
    )
    timings["save"] = time.perf_counter() - t
    return ckpt


def load_run(out_dir: str | Path) -> dict[str, Any]:
    """The ``report.json`` of a finished run, as a dict."""
    p = Path(out_dir) / "report.json"
    if not p.is_file():
        raise CompressionError(f"{out_dir} holds no finished run (report.json missing)")
    run: dict[str, Any] = json.loads(p.read_text())
    return run
