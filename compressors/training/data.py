"""Token windows for training, cut from the calibration tokens a run already has.

The runner fills :attr:`RunContext.calibration` with ``[n_samples, seq_len]`` token ids taken from the
user's text (or the built-in pydoc text). Training methods want many short windows (short sequences
train fastest per token on a CPU), so each calibration row is cut into consecutive non-overlapping
windows of the method's ``seq_len``. A few windows are held back as a *validation* set that no
optimizer step sees; it is what the "before / after recovery" perplexities inside a run are measured
on. (Calibration rows come from seeded random offsets and may overlap each other, so the validation
windows are held out from training batches, not necessarily from the training *text*; the harness's
evaluation text is the truly unseen one.)
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from compressors.base import CompressionError, RunContext

log = logging.getLogger(__name__)


def run_tokens(
    ctx: RunContext, tokenizer: Any = None, n_samples: int = 128, seq_len: int = 512
) -> torch.Tensor:
    """The run's calibration tokens ``[n, L]``; without them, windows of the built-in calibration text.

    Falls back to :mod:`compressors.text` only when a tokenizer is given, so library callers that pass
    neither get an error that says how to provide text.
    """
    tok = ctx.calibration
    if tok is None:
        if tokenizer is None:
            raise CompressionError(
                "this compressor trains on text: give RunContext.calibration ([n_samples, seq_len] token ids; "
                "shrinkwise compress --calib FILE) or a tokenizer so the built-in text can be used"
            )
        from compressors.text import calibration_windows, default_split

        tok = calibration_windows(tokenizer, default_split().calibration, n_samples, seq_len, seed=ctx.seed)
    tok = torch.as_tensor(tok).long()
    return tok[None] if tok.dim() == 1 else tok


def cut_windows(tokens: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Cut each row of ``tokens`` ``[n, L]`` into ``L // seq_len`` consecutive windows ``[m, seq_len]``.

    Rows shorter than ``seq_len`` are an error naming both lengths: padding would train on padding.
    """
    if tokens.dim() != 2:
        raise ValueError(f"tokens must be [n, L]; got shape {tuple(tokens.shape)}")
    n, length = tokens.shape
    if length < seq_len:
        raise CompressionError(
            f"calibration rows have {length} tokens, shorter than seq_len={seq_len}; lower seq_len to at most "
            f"{length} or give longer calibration windows"
        )
    per_row = length // seq_len
    return tokens[:, : per_row * seq_len].reshape(n * per_row, seq_len).contiguous()


def split_validation(windows: torch.Tensor, n_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, validation)``: the last ``n_val`` windows are held back from every training batch."""
    if n_val < 0:
        raise ValueError(f"n_val={n_val} must be >= 0")
    if windows.shape[0] - n_val < 1:
        raise CompressionError(
            f"only {windows.shape[0]} training windows; holding back {n_val} for validation leaves none. "
            "Give more calibration text, shorten seq_len or lower val_windows"
        )
    if n_val == 0:
        return windows, windows[:0]
    return windows[:-n_val], windows[-n_val:]


class BatchSampler:
    """Seeded batches of windows: a fresh permutation each epoch, so every window is seen once per epoch."""

    def __init__(self, windows: torch.Tensor, batch_size: int, seed: int = 0) -> None:
        if windows.shape[0] < 1:
            raise CompressionError("no training windows")
        self.windows = windows
        self.batch_size = min(batch_size, windows.shape[0])
        self.gen = torch.Generator().manual_seed(seed)
        self._order: list[int] = []
        self.epochs = 0

    def next(self) -> torch.Tensor:
        if len(self._order) < self.batch_size:
            self._order = torch.randperm(self.windows.shape[0], generator=self.gen).tolist()
            self.epochs += 1
        idx, self._order = self._order[: self.batch_size], self._order[self.batch_size :]
        return self.windows[idx]


def prepare(
    ctx: RunContext, tokenizer: Any, seq_len: int, val_windows: int, batch_size: int, n_min_windows: int = 2
) -> tuple[BatchSampler, torch.Tensor]:
    """Training sampler and validation windows for a run (see module docstring)."""
    windows = cut_windows(run_tokens(ctx, tokenizer), seq_len)
    if windows.shape[0] < n_min_windows:
        raise CompressionError(
            f"{windows.shape[0]} windows of {seq_len} tokens is too little text to train on; need at least "
            f"{n_min_windows}. Give more calibration text or shorten seq_len"
        )
    train, val = split_validation(windows, min(val_windows, windows.shape[0] // 4))
    log.info(
        "training on %d windows of %d tokens, %d held back for validation",
        train.shape[0],
        seq_len,
        val.shape[0],
    )
    return BatchSampler(train, batch_size, seed=ctx.seed), val


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def maybe_to(x: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    return None if x is None else x.to(device)
