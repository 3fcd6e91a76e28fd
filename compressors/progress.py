"""Progress reporting, written once: the :class:`Reporter` that compressors, the run orchestration
(:func:`compressors.run.compress_and_measure`) and the job worker all use.

A progress report is ``(stage, fraction, message)``: a short stage name ("calibrate", "layer 3/30"),
a fraction in [0, 1] and an optional message. Every report goes through the same steps, here and only
here: stop if the run was cancelled, clamp the fraction, map it onto the caller's share of the whole
run (:meth:`Reporter.span`), record the message as one timestamped log line, and hand the report on to
a sink (a plain ``callback(stage, fraction, message)``: the CLI's progress bar, the job's database row).

Why one type: the orchestration gives a compressor a *span* of its own reporter instead of wrapping it
in a second one, so a compressor's log line is recorded once (``report.json`` used to hold every
compressor line twice, once from the compressor's context and once from the run's wrapper).

**Counts and ETA.** A report may carry a :class:`Count` (windows, layers, files done of a total). The
reporter then shows the stage as ``"measure after — 12/20 windows, ETA 00:41"``: the label is the
span's name (``Reporter.span(..., name="measure after")``) or the reported stage, both when they differ
(``"compress · block 3/30 — 17/210 layers, ETA 03:12"``), and the ETA is the
rate measured on this step so far (time since its first report over the items done since, times the
items left; :class:`RateMeter`, whose clock is injected so tests need no sleeping). The log line keeps
the stage as the caller wrote it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: ``callback(stage, fraction, message)``: where reports go after the reporter has handled them.
ProgressSink = Callable[[str, float, str], None]


class Cancelled(Exception):
    """Raised inside a run when it was cancelled; the job runner records it as cancelled."""


def log_line(stage: str | None, message: str) -> str:
    """One log line as every reporter writes it: ``HH:MM:SS [stage] message``."""
    prefix = time.strftime("%H:%M:%S")
    return f"{prefix} [{stage}] {message}" if stage is not None else f"{prefix} {message}"


#: Between a stage's label and its count in the text shown for a counted report.
STAGE_SEP = " — "


@dataclass(frozen=True)
class Count:
    """How far a counted step is: ``done`` of ``total`` ``unit`` (``Count(12, 20, "windows")``)."""

    done: int
    total: int
    unit: str


def fmt_eta(seconds: float) -> str:
    """``mm:ss`` (``h:mm:ss`` from an hour on), rounded up to the next second."""
    s = max(0, int(-(-seconds // 1)))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


def progress_text(label: str, count: Count, eta_s: float | None) -> str:
    """``"measure after — 12/20 windows, ETA 00:41"`` (no ETA before a rate is measured or once done)."""
    text = f"{label}{STAGE_SEP}{count.done}/{count.total} {count.unit}"
    if eta_s is not None and count.done < count.total:
        text += f", ETA {fmt_eta(eta_s)}"
    return text


def base_stage(text: str) -> str:
    """The stage of a shown progress text, without its count (``"measure after"``)."""
    return text.split(STAGE_SEP, 1)[0]


class RateMeter:
    """The ETA of counted steps from the rate measured on each so far.

    A step is known by a key (its label, unit and total). Its first report starts its clock; each later
    one gives ``seconds since the first report / items done since × items left``. A count that goes
    back (the step started again) restarts the clock. ``clock`` returns seconds (``time.monotonic``).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._starts: dict[tuple[str, str, int], tuple[float, int]] = {}
        self._last: dict[tuple[str, str, int], int] = {}

    def eta(self, label: str, count: Count) -> float | None:
        """Seconds left for this step, or None while no rate is measured yet."""
        now = self.clock()
        key = (label, count.unit, count.total)
        start = self._starts.get(key)
        if start is None or count.done < self._last[key]:
            self._starts[key], self._last[key] = (now, count.done), count.done
            return None
        self._last[key] = count.done
        t0, d0 = start
        if count.done <= d0:
            return None
        return (now - t0) / (count.done - d0) * max(count.total - count.done, 0)


def _clamp(fraction: float) -> float:
    return max(0.0, min(1.0, float(fraction)))


class Reporter:
    """Takes progress reports: checks for cancel, maps the fraction, records the line, delivers it.

    ``lines`` is the run's log, shared by every span of one reporter; ``echo`` also sends each line to
    Python logging (off for a reporter that only forwards another one's reports, so a line is logged
    once). Subclasses that deliver reports elsewhere (the job's database row) override :meth:`deliver`;
    the spans of a reporter deliver through it.
    """

    def __init__(
        self,
        sink: ProgressSink | None = None,
        cancel_event: threading.Event | None = None,
        lines: list[str] | None = None,
        *,
        echo: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink = sink
        self.cancel_event = cancel_event if cancel_event is not None else threading.Event()
        self.lines: list[str] = lines if lines is not None else []
        self.echo = echo
        self.meter = RateMeter(clock)
        self.name: str | None = None  # the label of counted reports (a stage of the run)
        self._lo, self._hi = 0.0, 1.0
        self._root: Reporter = self

    def __call__(self, stage: str, fraction: float, message: str = "", *, count: Count | None = None) -> None:
        """Report ``stage`` at ``fraction`` of this reporter's range; ``message`` becomes a log line;
        ``count`` shows how many items of the step are done, with an ETA (see the module docstring)."""
        self.check_cancelled()
        whole = self._lo + (self._hi - self._lo) * _clamp(fraction)
        line = log_line(stage, message) if message else None
        if line is not None:
            self.record(line)
        shown = stage
        if count is not None:
            # the rate is the run stage's ("compress"); the compressor's own step stays readable in it
            key = self.name or stage
            label = key if stage in (key, "") else f"{key} · {stage}"
            shown = progress_text(label, count, self._root.meter.eta(key, count))
        self._root.deliver(shown, whole, message, line)

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled("cancelled by the user")

    def record(self, line: str) -> None:
        """Add one line to the run's log (and to Python logging when ``echo``)."""
        self.lines.append(line)
        if self.echo:
            log.info(line)

    def log(self, message: str) -> None:
        """A log line that is not a progress report (e.g. the reason a job failed)."""
        self.record(log_line(None, message))

    def deliver(self, stage: str, fraction: float, message: str, line: str | None) -> None:
        """Hand a handled report on: ``fraction`` is over the whole run, ``line`` the recorded line."""
        if self.sink is not None:
            self.sink(stage, fraction, message)

    def span(self, lo: float, hi: float, name: str | None = None) -> Reporter:
        """A reporter whose fractions 0..1 fill ``[lo, hi]`` of this one's range, sharing its log, cancel
        event, rate meter and delivery (what a stage of a run, or a compressor inside it, reports
        through). ``name`` labels its counted reports (default: this reporter's name)."""
        child = Reporter(cancel_event=self.cancel_event, lines=self.lines, echo=self.echo)
        width = self._hi - self._lo
        child._lo, child._hi = self._lo + width * _clamp(lo), self._lo + width * _clamp(hi)
        child._root = self._root
        child.name = name or self.name
        return child
