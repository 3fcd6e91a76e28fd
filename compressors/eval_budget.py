"""How much text the before/after measurement uses when the user does not say: bounded by the compression.

The default measurement (20 windows of 512 tokens, a speed test and a short generation) takes seconds on
the demo model, but its forward passes grow with the parameters: on a 7B model on a CPU it would take far
longer than an RTN compression, twice (before and after). So, unless the user sets the windows, the run
picks them from the model's shape and this device's measured throughput
(:func:`compressors.run.evaluate_work` divided by :mod:`compressors.throughput`'s rates):

* a measurement that takes at most :data:`CHEAP_SECONDS` keeps the default 20 x 512 (the demo model, and
  any model small for the device), so figures stay comparable with every earlier run;
* otherwise the largest plan of :data:`LADDER` (fewer windows first, then shorter ones; perplexity over
  long windows is what published figures use) whose before *and* after measurements together take no
  longer than the compression's estimate; when the original's measurement is cached for a plan
  (:mod:`compressors.measure_cache`), only "after" costs, so that plan counts once;
* when even the smallest plan is over the budget, the smallest is used and the reason says so (the fixed
  part, the speed test and the generation, reads every weight per decoded token).

The choice is a step of :data:`LADDER`, not any number, so runs of different methods on one model often
share a plan and reuse the original's measurement. Explicit settings always win. The run's report and
the pre-run estimate state the plan and why (:attr:`EvalPlan.reason`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from compressors.base import ModelShape
from compressors.text import DEFAULT_EVAL_WINDOWS, DEFAULT_SEQ_LEN
from compressors.throughput import Throughput

#: A measurement at most this long keeps the default windows, whatever the compression takes.
CHEAP_SECONDS = 60.0
#: The plans tried, largest first: (windows, tokens per window).
LADDER: tuple[tuple[int, int], ...] = (
    (DEFAULT_EVAL_WINDOWS, DEFAULT_SEQ_LEN),
    (16, 512),
    (12, 512),
    (8, 512),
    (6, 512),
    (4, 512),
    (4, 256),
    (4, 128),
)


@dataclass(frozen=True)
class EvalPlan:
    """The evaluation windows a run uses, the estimated seconds of one measurement, and why."""

    windows: int
    seq_len: int
    seconds: float
    reason: str
    chosen: bool = True  # False: the user's own setting

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.windows} windows of {self.seq_len} tokens ({self.reason})"


def _fmt(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def choose_eval_windows(
    shape: ModelShape,
    compress_seconds: float,
    throughput: Throughput,
    *,
    windows: int | None = None,
    seq_len: int | None = None,
    measure_speed: bool = True,
    cached: Collection[tuple[int, int]] = (),
    cheap_seconds: float = CHEAP_SECONDS,
) -> EvalPlan:
    """The evaluation plan for a model of ``shape`` whose compression is estimated at
    ``compress_seconds`` on a device of ``throughput``; ``windows``/``seq_len``: the user's settings
    (either one given: kept, the other at its default); ``cached``: plans whose original measurement is
    already stored. A pure function of its arguments."""
    from compressors.run import evaluate_work

    def cost(plan: tuple[int, int]) -> float:
        return evaluate_work(shape, plan[0], plan[1], measure_speed=measure_speed).seconds(throughput)

    if windows is not None or seq_len is not None:
        plan = (windows or DEFAULT_EVAL_WINDOWS, seq_len or DEFAULT_SEQ_LEN)
        return EvalPlan(*plan, cost(plan), "set by the user", chosen=False)
    default = LADDER[0]
    t_default = cost(default)
    if t_default <= cheap_seconds:
        return EvalPlan(
            *default,
            t_default,
            f"the default: measuring takes about {_fmt(t_default)} on this device, at most "
            f"{_fmt(cheap_seconds)}",
        )
    budget = max(float(compress_seconds), 2 * cheap_seconds)
    within = (
        f"the compression's estimated {_fmt(budget)}"
        if compress_seconds >= 2 * cheap_seconds
        else f"{_fmt(budget)} (the compression is estimated at {_fmt(compress_seconds)}; twice the "
        f"{_fmt(cheap_seconds)} a measurement may always take)"
    )

    def total(plan: tuple[int, int]) -> float:  # before (unless cached) + after
        return cost(plan) * (1 if plan in cached else 2)

    for plan in LADDER:
        if total(plan) <= budget:
            cached_note = ", the original's measurement reused" if plan in cached else ""
            return EvalPlan(
                *plan,
                cost(plan),
                f"bounded by the compression: the default {default[0]}x{default[1]} would take about "
                f"{_fmt(t_default)} per measurement; this takes about {_fmt(cost(plan))}{cached_note}, "
                f"before and after together within {within}",
            )
    smallest = LADDER[-1]
    fixed = evaluate_work(shape, 0, smallest[1], measure_speed=measure_speed).seconds(throughput)
    return EvalPlan(
        *smallest,
        cost(smallest),
        f"the smallest plan: even it takes about {_fmt(cost(smallest))} per measurement (of which "
        f"{_fmt(fixed)} is the speed test and generation), so before and after take longer than {within}; "
        "skip the measurement of the original, or compress without measuring",
    )


def plan_for_model(
    info: Any,
    compress_seconds: float | None,
    eval_text: str | None,
    *,
    windows: int | None = None,
    seq_len: int | None = None,
    measure_speed: bool = True,
    throughput: Throughput | None = None,
) -> EvalPlan:
    """:func:`choose_eval_windows` for a checkpoint (:class:`compressors.models.ModelInfo`), with the
    plans whose original measurement this machine has stored for ``eval_text`` (None: not looked up).
    Without a shape or an estimate the default (or the user's setting) is used, and the reason says so."""
    from compressors import measure_cache
    from compressors.throughput import get_throughput

    shape = getattr(info, "shape", None)
    if shape is None or compress_seconds is None:
        plan = (windows or DEFAULT_EVAL_WINDOWS, seq_len or DEFAULT_SEQ_LEN)
        user = windows is not None or seq_len is not None
        why = "set by the user" if user else "the default (no estimate of the compression to bound it by)"
        return EvalPlan(*plan, 0.0, why, chosen=not user)
    cached: list[tuple[int, int]] = []
    if eval_text is not None and windows is None and seq_len is None:
        for plan in LADDER:
            try:
                if measure_cache.load(measure_cache.key(info, eval_text, *plan, measure_speed)) is not None:
                    cached.append(plan)
            except OSError:
                continue
    return choose_eval_windows(
        shape,
        compress_seconds,
        throughput or get_throughput(),
        windows=windows,
        seq_len=seq_len,
        measure_speed=measure_speed,
        cached=cached,
    )
