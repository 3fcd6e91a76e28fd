"""Progress reporting is written once (compressors.progress.Reporter) and records every line once."""

from __future__ import annotations

import threading

import pytest

from compressors.base import Cancelled, RunContext
from compressors.progress import Reporter


def test_a_compressor_line_is_recorded_once_and_mapped_onto_its_span():
    seen: list[tuple[str, float, str]] = []
    run = Reporter(lambda s, f, m: seen.append((s, f, m)))
    run("load", 0.0, "loading")
    ctx = RunContext(progress=run.span(0.2, 0.8))
    ctx.report("layer 1/2", 0.5, "q_proj")
    sub = ctx.span(0.5, 1.0)  # a compressor running another one as its second half
    sub.report("prune", 1.0, "done")
    assert [line.split(" ", 1)[1] for line in run.lines] == [
        "[load] loading",
        "[layer 1/2] q_proj",
        "[prune] done",
    ]
    assert ctx.log_lines is run.lines and sub.log_lines is run.lines
    assert [f for _, f, _ in seen] == pytest.approx([0.0, 0.5, 0.8])


def test_a_plain_callback_context_records_its_lines_and_can_be_cancelled():
    seen: list[float] = []
    ctx = RunContext(progress=lambda s, f, m="": seen.append(f))
    ctx.report("calibrate", 2.0, "clamped")
    ctx.report("calibrate", 0.5)  # no message: no line
    assert seen == [1.0, 0.5] and len(ctx.log_lines) == 1 and ctx.log_lines[0].endswith("[calibrate] clamped")
    ctx.cancel_event.set()
    with pytest.raises(Cancelled):
        ctx.report("calibrate", 0.6)


def test_a_subclass_receives_span_reports_with_their_line():
    got: list[tuple[str, float, str | None]] = []

    class Row(Reporter):
        def deliver(self, stage: str, fraction: float, message: str, line: str | None) -> None:
            got.append((stage, fraction, line))

    row = Row(cancel_event=threading.Event())
    row.span(0.5, 1.0)("save", 0.5, "saving")
    assert got[0][:2] == ("save", 0.75) and got[0][2] is not None and got[0][2].endswith("[save] saving")
    assert row.lines == [got[0][2]]
