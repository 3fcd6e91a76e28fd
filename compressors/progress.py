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
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: ``callback(stage, fraction, message)``: where reports go after the reporter has handled them.
ProgressSink = Callable[[str, float, str], None]


class Cancelled(Exception):
    """Raised inside a run when it was cancelled; the job runner records it as cancelled."""


def log_line(stage: str | None, message: str) -> str:
    """One log line as every reporter writes it: ``HH:MM:SS [stage] message``."""
    prefix = time.strftime("%H:%M:%S")
    return f"{prefix} [{stage}] {message}" if stage is not None else f"{prefix} {message}"


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
    ) -> None:
        self.sink = sink
        self.cancel_event = cancel_event if cancel_event is not None else threading.Event()
        self.lines: list[str] = lines if lines is not None else []
        self.echo = echo
        self._lo, self._hi = 0.0, 1.0
        self._root: Reporter = self

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.check_cancelled()
        whole = self._lo + (self._hi - self._lo) * _clamp(fraction)
        line = log_line(stage, message) if message else None
        if line is not None:
            self.record(line)
        self._root.deliver(stage, whole, message, line)

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

    def span(self, lo: float, hi: float) -> Reporter:
        """A reporter whose fractions 0..1 fill ``[lo, hi]`` of this one's range, sharing its log, cancel
        event and delivery (what a stage of a run, or a compressor inside it, reports through)."""
        child = Reporter(cancel_event=self.cancel_event, lines=self.lines, echo=self.echo)
        width = self._hi - self._lo
        child._lo, child._hi = self._lo + width * _clamp(lo), self._lo + width * _clamp(hi)
        child._root = self._root
        return child
