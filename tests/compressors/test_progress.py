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


class FakeClock:
    """Seconds that move only when a test says so: ETAs without sleeping."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_is_the_measured_rate_of_the_step_times_what_is_left():
    from compressors.progress import Count, RateMeter, fmt_eta

    clock = FakeClock()
    meter = RateMeter(clock)
    assert meter.eta("measure after", Count(0, 20, "windows")) is None  # no rate yet
    clock.now += 10.0
    assert meter.eta("measure after", Count(5, 20, "windows")) == pytest.approx(30.0)  # 2 s a window
    clock.now += 30.0
    assert meter.eta("measure after", Count(10, 20, "windows")) == pytest.approx(40.0)  # slowed to 4 s
    assert meter.eta("measure after", Count(20, 20, "windows")) == 0.0
    # another step (or the same step started again) has its own clock
    assert meter.eta("measure before", Count(3, 20, "windows")) is None
    assert meter.eta("measure after", Count(1, 20, "windows")) is None
    assert (fmt_eta(0), fmt_eta(41.2), fmt_eta(61), fmt_eta(3725)) == ("00:00", "00:42", "01:01", "1:02:05")


def test_a_counted_report_shows_stage_count_and_eta_and_logs_the_callers_stage():
    from compressors.progress import Count

    seen: list[str] = []
    clock = FakeClock()
    run = Reporter(lambda s, f, m: seen.append(s), clock=clock)
    after = run.span(0.8, 0.97, name="measure after")
    after("measure after", 0.0, count=Count(0, 20, "windows"))
    clock.now += 12.0
    after("measure after", 0.3, count=Count(6, 20, "windows"))
    after("measure after", 1.0, count=Count(20, 20, "windows"))
    assert seen == [
        "measure after — 0/20 windows",
        "measure after — 6/20 windows, ETA 00:28",
        "measure after — 20/20 windows",
    ]
    # a compressor inside the "compress" span: the run's stage, its own step, the layers and the ETA
    ctx = RunContext(progress=run.span(0.2, 0.75, name="compress"))
    ctx.report("gptq", 0.0, count=Count(0, 14, "layers"))
    clock.now += 7.0
    ctx.report("block 1/2", 0.5, "q_proj: loss=0.1", count=Count(7, 14, "layers"))
    assert seen[-1] == "compress · block 1/2 — 7/14 layers, ETA 00:07"
    assert run.lines[-1].endswith("[block 1/2] q_proj: loss=0.1")


def test_a_plain_callback_context_keeps_one_meter_across_reports():
    from compressors.progress import Count

    seen: list[str] = []
    ctx = RunContext(progress=lambda s, f, m="": seen.append(s))
    ctx.reporter().meter.clock = clock = FakeClock()
    ctx.report("quantize", 0.0, count=Count(0, 4, "layers"))
    clock.now += 2.0
    ctx.report("quantize", 0.5, count=Count(2, 4, "layers"))
    assert seen[-1] == "quantize — 2/4 layers, ETA 00:02"
