"""Checks the Compress page runs before a job is queued, so every problem the user can fix is shown on
the page with its reason instead of surfacing minutes later as a failed job.

* :func:`check_model`: what the checkpoint is (architecture, parameters, dtype, size, layers) from its
  config and file headers, refusing a missing config, corrupt safetensors, unsafe pickles, non-causal
  or unsupported architectures, and a model too large for the free memory (from the config, before any
  weight is read). It runs in a child process with a memory limit (``RLIMIT_AS``,
  ``SHRINKWISE_INSPECT_MEMORY_MB``, default 4096 plus the size of the files that are memory-mapped) and
  a time limit (``SHRINKWISE_INSPECT_TIMEOUT_S``, default 60), so a hostile upload cannot grow or stall
  the server; :func:`inspect_model` is the same check in this process.
* :func:`estimate_cost`: the compressor's own estimate of peak memory and time, against free memory,
  and the time of every stage of the run (load, measure before, compress, save, measure after, export).
* :func:`check_texts`: enough calibration and evaluation tokens, counted with the model's tokenizer.
* :func:`export_check`: settings that block an export (a group size that does not divide a width,
  act-order), with the nearest setting that does not (rules: :mod:`jobs.export_check`).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressors.base import DEFAULT_CALIBRATION, Calibration, CompressorId, CostEstimate, get_compressor
from jobs.export_check import ExportCheck

log = logging.getLogger(__name__)


ENV_INSPECT_MEMORY_MB = "SHRINKWISE_INSPECT_MEMORY_MB"
ENV_INSPECT_TIMEOUT_S = "SHRINKWISE_INSPECT_TIMEOUT_S"
#: Address space for the inspecting process: Python, torch and transformers take ~0.8 GB of it.
DEFAULT_INSPECT_MEMORY_MB = 4096
DEFAULT_INSPECT_TIMEOUT_S = 60.0
_RESULT = "SHRINKWISE-INSPECT-RESULT "
_ROOT = Path(__file__).resolve().parents[1]
#: How a failed allocation under RLIMIT_AS reads when it is not a MemoryError (a library that cannot be
#: mapped, an mmap refused by the OS, C++'s std::bad_alloc).
_OUT_OF_MEMORY = ("failed to map segment", "Cannot allocate memory", "bad_alloc", "out of memory")


def inspect_model(ref: str) -> Any:
    """:func:`check_model` in this process (what the child process runs)."""
    from compressors.models import check_memory, check_weights_match, inspect_checkpoint
    from jobs.uploads import check_pickles

    info = inspect_checkpoint(ref)
    if info.path and info.source == "folder":
        check_pickles(info.path)
    if info.shape is not None:
        check_memory(info.shape, info.ref)
    check_weights_match(info.path if info.source == "folder" and info.path else ref)
    return info


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        log.warning("%s=%r is not a number; using %s", name, raw, default)
        return default
    return value if value > 0 else default


def _mapped_bytes(ref: str) -> int:
    """Bytes of the files the inspection memory-maps (pickled weights, a GGUF): they count in RLIMIT_AS."""
    p = Path(ref)
    try:
        if p.is_file():
            return p.stat().st_size
        if p.is_dir():
            return sum(f.stat().st_size for f in p.iterdir() if f.suffix in (".bin", ".pt", ".pth", ".gguf"))
    except OSError:
        pass
    return 0


def check_model(ref: str, *, memory_mb: float | None = None, timeout_s: float | None = None) -> Any:
    """The checkpoint's :class:`compressors.models.ModelInfo`; raises ``CompressionError`` with the reason.

    Read in a child process under a memory and a time limit: whatever a config or a file header asks
    for, this process does not grow, and an answer (or a clear refusal) comes within ``timeout_s``.
    """
    from compressors.base import ModelShape
    from compressors.models import ModelInfo, ModelLoadError

    mem_mb = memory_mb or _env_number(ENV_INSPECT_MEMORY_MB, DEFAULT_INSPECT_MEMORY_MB)
    limit = int(mem_mb * 2**20) + _mapped_bytes(ref)
    timeout = timeout_s or _env_number(ENV_INSPECT_TIMEOUT_S, DEFAULT_INSPECT_TIMEOUT_S)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jobs.preflight", ref, str(limit)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=str(_ROOT),
        )
    except subprocess.TimeoutExpired:
        raise ModelLoadError(
            f"reading {ref} took longer than {timeout:g} s and was stopped; its config or files are damaged "
            f"or unusually large (raise {ENV_INSPECT_TIMEOUT_S} if this model is real)"
        ) from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT)]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:300]
        if proc.returncode < 0 or any(m in proc.stderr for m in ("MemoryError", *_OUT_OF_MEMORY)):
            raise ModelLoadError(
                f"reading {ref} needed more than the {limit / 2**20:,.0f} MB allowed for inspecting a model "
                f"and was stopped ({tail}); its config or files are damaged or hostile "
                f"(raise {ENV_INSPECT_MEMORY_MB} if this model is real)"
            )
        raise ModelLoadError(f"cannot read {ref}: the inspection failed ({tail})")
    answer = json.loads(lines[-1][len(_RESULT) :])
    if "error" in answer:
        raise ModelLoadError(answer["error"])
    d = dict(answer["info"])
    shape = d.pop("shape", None)
    return ModelInfo(**d, shape=ModelShape(**shape) if shape else None)


def _child(ref: str, limit: int) -> None:
    """The child process of :func:`check_model`: limits first, then the inspection; one result line."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from compressors.base import CompressionError

    try:
        answer: dict[str, Any] = {"info": inspect_model(ref).to_dict()}
    except CompressionError as exc:
        answer = {"error": str(exc)}
    except Exception as exc:  # an unexpected reader error: said on the page, never a crash
        text = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, MemoryError) or any(m in text for m in _OUT_OF_MEMORY):
            answer = {
                "error": f"reading {ref} needed more than the {limit / 2**20:,.0f} MB allowed for inspecting a "
                f"model and was stopped; its config or files are damaged or hostile (raise "
                f"{ENV_INSPECT_MEMORY_MB} if this model is real)"
            }
        else:
            answer = {"error": f"cannot read this model: {text}"}
    print(_RESULT + json.dumps(answer, default=str), flush=True)


@dataclass(frozen=True)
class CostCheck:
    """The compressor's estimate, the free memory now, and the time of every stage of the run
    (:func:`compressors.run.estimate_stages`: load, measure before, compress, save, measure after,
    export, and their total)."""

    estimate: CostEstimate
    free_memory_bytes: int
    stages: dict[str, float] = field(default_factory=dict)
    #: the evaluation windows the stages assume, and why (:mod:`compressors.eval_budget`)
    eval_plan: Any = None

    @property
    def fits(self) -> bool:
        return not self.free_memory_bytes or self.estimate.peak_memory_bytes <= self.free_memory_bytes

    @property
    def warning(self) -> str | None:
        if self.fits:
            return None
        return (
            f"The run needs about {self.estimate.peak_memory_bytes / 2**30:.1f} GiB at its peak but only "
            f"{self.free_memory_bytes / 2**30:.1f} GiB is free now: it may be killed for lack of memory. "
            "Close other programs, pick settings with a lower peak, or use a smaller model."
        )


def check_compatible(compressor_id: CompressorId, info: Any) -> None:
    """Raise ``CompressionError`` when the compressor cannot run this architecture at all (e.g. token
    pruning on a model type it does not support), from the config alone, so Run is never offered."""
    get_compressor(compressor_id).check_model(info.model_type)


def estimate_cost(
    compressor_id: CompressorId,
    info: Any,
    config: dict[str, Any],
    calib: Calibration = DEFAULT_CALIBRATION,
    *,
    eval_windows: int | None = None,
    eval_seq_len: int | None = None,
    before_seconds: float | None = None,
    eval_text: str | None = None,
) -> CostCheck:
    """The compressor's estimate for this model, settings and calibration size (``ConfigError`` for
    rejected settings), and the time of every stage of the run for ``eval_windows`` x ``eval_seq_len``
    evaluation tokens; ``before_seconds``: the original's measurement this machine already holds for the
    same files and text (:func:`cached_before_seconds`), which the run will reuse.

    Neither ``eval_windows`` nor ``eval_seq_len`` given: the windows the run will choose itself, bounded
    by the compression (:func:`compressors.eval_budget.plan_for_model`, with ``eval_text`` the evaluation
    text whose cached measurements count), and the cached measurement of that plan, if any."""
    from compressors.models import ModelInfo, available_memory_bytes
    from compressors.run import estimate_stages
    from compressors.streaming import estimate_run
    from compressors.text import DEFAULT_EVAL_WINDOWS, DEFAULT_SEQ_LEN

    comp = get_compressor(compressor_id)
    cfg = comp.config_cls.from_dict(dict(config))
    # block-wise methods on a safetensors folder stream block by block: their peak is one block's, not the model's
    streamed = estimate_run(comp, info, cfg, calib) if isinstance(info, ModelInfo) else None
    estimate = streamed or comp.estimate(info.shape, cfg, calib)
    from compressors.eval_budget import plan_for_model

    plan = plan_for_model(
        info, estimate.seconds, eval_text, windows=eval_windows, seq_len=eval_seq_len, measure_speed=True
    )
    if before_seconds is None and eval_text is not None and plan.chosen:
        before_seconds = _cached_seconds(info, eval_text, plan.windows, plan.seq_len, True)
    stages = estimate_stages(
        info.shape,
        estimate.seconds,
        size_on_disk_bytes=getattr(info, "size_on_disk_bytes", None),
        eval_windows=plan.windows or DEFAULT_EVAL_WINDOWS,
        eval_seq_len=plan.seq_len or DEFAULT_SEQ_LEN,
        before_seconds=before_seconds,
    )
    return CostCheck(estimate, available_memory_bytes(), stages, plan)


def eval_text_of(calib_path: str | Path | None, eval_path: str | Path | None) -> str:
    """The evaluation text a run with these text files measures on (the built-in text's held-out part
    when neither is given)."""
    from compressors.text import resolve_texts

    return resolve_texts(
        Path(calib_path) if calib_path else None, Path(eval_path) if eval_path else None
    ).evaluation


def _cached_seconds(
    info: Any, eval_text: str, windows: int, seq_len: int, measure_speed: bool
) -> float | None:
    from compressors import measure_cache

    try:
        cached = measure_cache.load(measure_cache.key(info, eval_text, windows, seq_len, measure_speed))
    except OSError:
        return None
    return None if cached is None else float(cached.seconds)


def cached_before_seconds(
    info: Any,
    calib_path: str | Path | None,
    eval_path: str | Path | None,
    eval_windows: int,
    eval_seq_len: int,
    measure_speed: bool = True,
) -> float | None:
    """How long measuring the original took, when an earlier run on the same files, text and windows
    left its measurement (:mod:`compressors.measure_cache`): the run reuses it. None otherwise."""
    from compressors import measure_cache
    from compressors.text import resolve_texts

    split = resolve_texts(Path(calib_path) if calib_path else None, Path(eval_path) if eval_path else None)
    cached = measure_cache.load(
        measure_cache.key(info, split.evaluation, eval_windows, eval_seq_len, measure_speed)
    )
    return None if cached is None else float(cached.seconds)


def export_check(compressor_id: CompressorId, info: Any, config: dict[str, Any]) -> ExportCheck:
    """What the exports of a run with these settings will hold, from the model's shape (nothing is said
    for a model whose shape is unknown). ``config`` may name only some settings (the CLI's ``--set``):
    the method's defaults fill the rest, as the run will (``ConfigError`` for rejected settings)."""
    from jobs.export_check import check_exports, quantized_widths

    if getattr(info, "shape", None) is None:
        return ExportCheck()
    full = get_compressor(compressor_id).config_cls.from_dict(dict(config)).to_dict()
    return check_exports(quantized_widths(info.shape), compressor_id, full)


@dataclass(frozen=True)
class TextCheck:
    source: str
    calibration_tokens: int
    evaluation_tokens: int


def check_texts(
    model_ref: str,
    calib_path: str | Path | None = None,
    eval_path: str | Path | None = None,
    *,
    needs_calibration: bool = True,
    tokenizer: Any = None,
    eval_windows: int | None = None,
    eval_seq_len: int | None = None,
    calib_seq_len: int | None = None,
) -> TextCheck:
    """Count tokens the way the run will; raise :class:`compressors.text.TextTooShort` when too few.

    The run measures perplexity on ``eval_windows`` windows of ``eval_seq_len`` tokens and calibrates on
    windows of ``calib_seq_len`` tokens (defaults: :mod:`compressors.text`'s 20 x 512 and 512).
    """
    from compressors.models import load_tokenizer
    from compressors.text import DEFAULT_EVAL_WINDOWS, DEFAULT_SEQ_LEN, TextTooShort, resolve_texts, tokenize

    split = resolve_texts(Path(calib_path) if calib_path else None, Path(eval_path) if eval_path else None)
    tok = tokenizer if tokenizer is not None else load_tokenizer(model_ref)
    n_cal = int(tokenize(tok, split.calibration).numel())
    n_eval = int(tokenize(tok, split.evaluation).numel())
    n_win, win = eval_windows or DEFAULT_EVAL_WINDOWS, eval_seq_len or DEFAULT_SEQ_LEN
    cal_len = calib_seq_len or DEFAULT_SEQ_LEN
    need_eval = n_win * win
    if n_eval < need_eval:
        raise TextTooShort(
            f"the evaluation text is too short: {n_eval} tokens, but perplexity is measured on "
            f"{n_win} windows of {win} tokens ({need_eval} tokens). "
            + (
                "A single text file is split 4:1 into calibration and evaluation, so it needs about "
                f"{5 * need_eval} tokens (~{5 * need_eval * 4 // 1000} kB of prose). "
                if not eval_path
                else ""
            )
            + "Give a longer file, or use the built-in text."
        )
    if needs_calibration and n_cal < cal_len:
        raise TextTooShort(
            f"the calibration text is too short: {n_cal} tokens, at least one window of {cal_len} is "
            "needed (ideally 128 windows). Give a longer file, or use the built-in text."
        )
    return TextCheck(split.source, n_cal, n_eval)


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]))
