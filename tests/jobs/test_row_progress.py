"""A job's progress row carries the stage with its count and ETA, throttled per stage, and the job
panel shows it as "stage — k/n, ETA mm:ss"."""

from __future__ import annotations

import threading

from compressors.progress import Count
from jobs import queue
from jobs.worker import RowReporter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_counted_reports_reach_the_row_with_their_eta_and_are_throttled_per_stage(home, monkeypatch):
    run = queue.create_run(model_ref="demo", model_name="m", method="gptq", compressor="gptq")
    queue.claim_next_run("host:1:t")
    writes: list[str] = []
    real = queue.update_progress

    def spy(run_id, stage, fraction, lines=None, url=None):
        writes.append(stage)
        return real(run_id, stage, fraction, lines, url=url)

    monkeypatch.setattr(queue, "update_progress", spy)
    clock = Clock()  # the throttle's and the ETA's
    row = RowReporter(int(run.id), None, threading.Event(), every_s=0.5, clock=clock)
    after = row.span(0.8, 0.97, name="measure after")
    after("measure after", 0.0, count=Count(0, 20, "windows"))
    clock.now += 0.2
    after("measure after", 0.1, count=Count(1, 20, "windows"))  # within 0.5 s of the last write: held
    clock.now += 5.8
    after("measure after", 0.1, count=Count(2, 20, "windows"))
    assert writes == ["measure after — 0/20 windows", "measure after — 2/20 windows, ETA 00:54"]
    assert queue.get_run(int(run.id)).stage == "measure after — 2/20 windows, ETA 00:54"
    # a new stage is written at once
    row.span(0.97, 1.0, name="export")("export", 0.0, count=Count(0, 1, "formats"))
    assert writes[-1] == "export — 0/1 formats"
