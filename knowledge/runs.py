"""Compression runs as knowledge: a succeeded run's measured figures become evidence rows.

The job queue that produces the runs lives in :mod:`jobs.queue`; this module only reads a finished
``CompressionRun`` row and turns its metrics into :class:`knowledge.schema.Evidence` marked *measured
here*, because what counts as evidence (which metric, which unit, which setting text) is knowledge logic
that the method pages, the map and the recommender share. Which figures become evidence, and in which
unit, is declared once on :class:`knowledge.metrics.RunMetrics`.
"""

from __future__ import annotations

import logging
import os
import platform
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlmodel import col, select

from knowledge.db import init_db, session
from knowledge.ids import MethodId
from knowledge.metrics import RunMetrics
from knowledge.schema import Evidence, Source, SourceTag
from knowledge.tables import CompressionRun, EvidenceOrigin, EvidenceRow, RunStatus

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def describe_machine() -> str:
    """A short description of this machine for 'measured here on ...' (CPU model, cores, OS)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count() or '?'} cores, {platform.system()}"


# ---------------------------------------------------------------------------------------------------
# Runs as evidence


def _setting_text(run: CompressionRun) -> str:
    config = ", ".join(f"{k}={v}" for k, v in sorted((run.config or {}).items()))
    return f"{run.compressor}" + (f" ({config})" if config else "")


def evidence_from_run(run: CompressionRun) -> list[Evidence]:
    """The measured evidence rows of a succeeded run: one per metric present before and after."""
    if RunStatus(run.status) is not RunStatus.SUCCEEDED:
        raise ValueError(f"run #{run.id} is {run.status}; only succeeded runs are evidence")
    before, after = RunMetrics.from_json(run.before_metrics), RunMetrics.from_json(run.after_metrics)
    machine = run.machine or describe_machine()
    dataset = None
    if isinstance(run.calibration, dict):
        dataset = run.calibration.get("eval") or run.calibration.get("dataset")
    rows: list[Evidence] = []
    for key, figure in RunMetrics.figures():
        value = after.in_unit(key)
        if value is None:  # not measured, or not a finite number
            continue
        baseline = before.in_unit(key)
        metric, what = figure.metric, figure.what
        setting = _setting_text(run) + (f"; {what}" if what else "")
        rows.append(
            Evidence(
                method=MethodId(run.method),
                model=run.model_name,
                setting=setting,
                metric=metric,
                dataset=str(dataset) if dataset else None,
                value=value,
                baseline=baseline,
                baseline_label="same model before compression" if baseline is not None else None,
                source=Source(
                    paper=f"Shrinkwise run #{run.id}",
                    locator=f"measured here on {machine}",
                    tag=SourceTag.MEASURED,
                ),
                note=f"run finished {run.finished_at:%Y-%m-%d %H:%M} UTC"
                if isinstance(run.finished_at, datetime)
                else None,
            )
        )
    return rows


def delete_evidence_of(s: Any, run_id: int) -> None:
    """Delete, in session ``s``, the evidence rows run ``run_id`` produced (before the run is deleted)."""
    for row in s.exec(select(EvidenceRow).where(EvidenceRow.run_id == run_id)).all():
        s.delete(row)


def record_measured_evidence(run_id: int, url: str | None = None) -> int:
    """Store (or re-store) the evidence rows of a succeeded run; returns how many."""
    with session(url) as s:
        run = s.get(CompressionRun, run_id)
        if run is None:
            raise KeyError(f"no compression run #{run_id}")
        rows = evidence_from_run(run)
        for old in s.exec(select(EvidenceRow).where(EvidenceRow.run_id == run_id)).all():
            s.delete(old)
        for ev in rows:
            s.add(
                EvidenceRow(
                    method=ev.method,
                    model=ev.model,
                    metric=ev.metric.value,
                    measured=True,
                    origin=EvidenceOrigin.RUN.value,
                    run_id=run_id,
                    data=ev.model_dump(mode="json"),
                )
            )
    clear_catalog_cache()
    return len(rows)


def measured_evidence(
    method: str | None = None, model: str | None = None, url: str | None = None
) -> list[Evidence]:
    """Evidence added by runs (not the data files), oldest first."""
    init_db(url)
    q = select(EvidenceRow).where(EvidenceRow.origin == EvidenceOrigin.RUN.value)
    if method is not None:
        q = q.where(EvidenceRow.method == method)
    if model is not None:
        q = q.where(EvidenceRow.model == model)
    with session(url) as s:
        return [Evidence.model_validate(r.data) for r in s.exec(q.order_by(col(EvidenceRow.id).asc())).all()]


def clear_catalog_cache() -> None:
    """Drop the cached catalog so pages see evidence a run added or removed."""
    from knowledge.catalog import clear_cache

    clear_cache()
