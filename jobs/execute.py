"""What one job does: compress and measure the model with :func:`compressors.run.compress_and_measure`,
then turn its result into the row's columns (before/after metrics as :class:`knowledge.metrics.RunMetrics`,
artifacts, generations, timings) and write the run report next to the checkpoint.

The worker calls :func:`execute` in the job's own process; tests swap it for a fake through
``SHRINKWISE_JOB_EXECUTOR`` to exercise the runner without torch.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from compressors.base import RunContext
from knowledge.metrics import RunMetrics

log = logging.getLogger(__name__)


def _as_dict(obj: Any) -> dict[str, Any]:
    if obj is None:
        return {}
    if isinstance(obj, dict):
        return dict(obj)
    if hasattr(obj, "to_dict"):
        return dict(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    return dict(vars(obj))


def text_sources(calibration: dict[str, Any] | None) -> tuple[Path | None, Path | None]:
    """The calibration and evaluation text files a job names (None: built-in text)."""
    cal = calibration or {}
    calib = Path(cal["calib_path"]) if cal.get("calib_path") else None
    evalp = Path(cal["eval_path"]) if cal.get("eval_path") else None
    return calib, evalp


#: Keys of a job's ``calibration`` dict passed on to compress_and_measure (how much text is used).
RUN_OPTIONS = {
    "n_calib_samples": int,
    "calib_seq_len": int,
    "eval_windows": int,
    "eval_seq_len": int,
    "measure_speed": bool,
}


def run_options(calibration: dict[str, Any] | None) -> dict[str, Any]:
    """The text-budget options a job asks for (missing ones keep compress_and_measure's defaults)."""
    cal = calibration or {}
    return {k: conv(cal[k]) for k, conv in RUN_OPTIONS.items() if cal.get(k) is not None}


def execute(run: Any, ctx: RunContext, out_dir: Path) -> dict[str, Any]:
    """Run the job described by ``run`` (a ``CompressionRun``); returns the columns to store."""
    from compressors.run import compress_and_measure

    calib, evalp = text_sources(run.calibration)
    result = compress_and_measure(
        run.model_ref,
        run.compressor,
        dict(run.config or {}),
        method=run.method,
        calib_text=calib,
        eval_text=evalp,
        out_dir=out_dir,
        progress=ctx.progress,
        cancel_event=ctx.cancel_event,
        **run_options(run.calibration),
    )
    return result_columns(result)


def result_columns(result: Any) -> dict[str, Any]:
    """Map a ``RunResult`` to the run row's result columns."""
    r = _as_dict(result) if not hasattr(result, "before") else None
    before = getattr(result, "before", None) if r is None else r.get("before")
    after = getattr(result, "after", None) if r is None else r.get("after")

    def get(k: str, default: Any = None) -> Any:
        return getattr(result, k, default) if r is None else r.get(k, default)

    run_figures = {
        key: get(key)
        for key in (
            "compress_peak_rss_bytes",
            "text_source",
            "estimate",
            "calibration_shape",
            "machine",
            "evaluation",  # the evaluation windows and why (compressors.eval_budget)
        )
        if get(key) is not None
    }
    before_m = RunMetrics.from_eval(before).to_json()
    after_m = RunMetrics.from_eval(after, **run_figures).to_json()
    artifacts = {k: str(v) for k, v in (_as_dict(get("artifacts")) or {}).items() if v}
    timings = {
        k: float(v) for k, v in (_as_dict(get("timings")) or {}).items() if isinstance(v, (int, float))
    }
    samples = {
        "prompt": after_m.get("generation_prompt") or before_m.get("generation_prompt"),
        "before": before_m.get("generation"),
        "after": after_m.get("generation"),
    }
    return {
        "before_metrics": before_m,
        "after_metrics": after_m,
        "artifacts": artifacts,
        "samples": samples,
        "timings": timings,
    }
