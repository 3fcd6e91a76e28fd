"""Checks the Compress page runs before a job is queued, so every problem the user can fix is shown on
the page with its reason instead of surfacing minutes later as a failed job.

* :func:`check_model`: what the checkpoint is (architecture, parameters, dtype, size, layers) from its
  config and file headers, refusing a missing config, corrupt safetensors, unsafe pickles, non-causal
  or unsupported architectures, and a model too large for the free memory (from the config, before any
  weight is read).
* :func:`estimate_cost`: the compressor's own estimate of peak memory and time, against free memory.
* :func:`check_texts`: enough calibration and evaluation tokens, counted with the model's tokenizer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressors.base import DEFAULT_CALIBRATION, Calibration, CompressorId, CostEstimate, get_compressor

log = logging.getLogger(__name__)


def check_model(ref: str) -> Any:
    """The checkpoint's :class:`compressors.models.ModelInfo`; raises ``CompressionError`` with the reason."""
    from compressors.models import check_memory, inspect_checkpoint
    from jobs.uploads import check_pickles

    info = inspect_checkpoint(ref)
    if info.path and info.source == "folder":
        check_pickles(info.path)
    if info.shape is not None:
        check_memory(info.shape, info.ref)
    return info


@dataclass(frozen=True)
class CostCheck:
    estimate: CostEstimate
    free_memory_bytes: int

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
    compressor_id: CompressorId, info: Any, config: dict[str, Any], calib: Calibration = DEFAULT_CALIBRATION
) -> CostCheck:
    """The compressor's estimate for this model, settings and calibration size (``ConfigError`` for
    rejected settings)."""
    from compressors.models import available_memory_bytes

    comp = get_compressor(compressor_id)
    cfg = comp.config_cls.from_dict(dict(config))
    return CostCheck(comp.estimate(info.shape, cfg, calib), available_memory_bytes())


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
