"""Gap analysis of the paper's phase x impact grid (claim 7, and claim 8's concentration on late phases).

For each of the eight cells: the paper's methods (``in_paper``), every method of the knowledge base,
whether the cell is empty in the paper's set (a *gap*), and the methods that now fill it. With the
paper's Table 1 the gaps are pre-training/dynamic, post-training/dynamic (the gap the paper names),
fine-tuning/dynamic and inference/static.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from knowledge.schema import PHASE_ORDER, Impact, Method, Phase

IMPACT_ORDER: tuple[Impact, ...] = (Impact.STATIC, Impact.DYNAMIC)


@dataclass(frozen=True)
class GapCell:
    phase: Phase
    impact: Impact
    paper_methods: tuple[str, ...]
    all_methods: tuple[str, ...]
    fillers: tuple[str, ...]  # methods beyond the paper that fill a paper gap (empty when not a gap)

    @property
    def is_paper_gap(self) -> bool:
        return not self.paper_methods

    @property
    def is_empty(self) -> bool:
        return not self.all_methods

    def to_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase.value,
            "impact": self.impact.value,
            "paper_methods": list(self.paper_methods),
            "all_methods": list(self.all_methods),
            "is_paper_gap": self.is_paper_gap,
            "fillers": list(self.fillers),
        }


@dataclass(frozen=True)
class GapReport:
    cells: tuple[GapCell, ...]  # phase order, static before dynamic

    @property
    def paper_gaps(self) -> list[tuple[str, str]]:
        return [(c.phase.value, c.impact.value) for c in self.cells if c.is_paper_gap]

    @property
    def still_empty(self) -> list[tuple[str, str]]:
        return [(c.phase.value, c.impact.value) for c in self.cells if c.is_empty]

    def cell(self, phase: Phase | str, impact: Impact | str) -> GapCell:
        for c in self.cells:
            if c.phase is Phase(phase) and c.impact is Impact(impact):
                return c
        raise KeyError((phase, impact))

    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": [c.to_dict() for c in self.cells],
            "paper_gaps": [list(g) for g in self.paper_gaps],
            "still_empty": [list(g) for g in self.still_empty],
        }


def _methods(source: Any) -> list[Method]:
    """Accept a Catalog (anything with ``.methods``), a mapping id -> Method, or an iterable of Methods."""
    if hasattr(source, "methods") and not isinstance(source, Mapping):
        source = source.methods
    if isinstance(source, Mapping):
        return list(source.values())
    return list(source)


def gap_report(catalog_or_methods: Any) -> GapReport:
    """The eight cells of the grid with the paper's and the knowledge base's methods in each."""
    methods = _methods(catalog_or_methods)
    cells = []
    for phase in PHASE_ORDER:
        for impact in IMPACT_ORDER:
            here = sorted(m.id for m in methods if m.phase is phase and m.impact is impact)
            paper = sorted(m.id for m in methods if m.phase is phase and m.impact is impact and m.in_paper)
            fillers = tuple(i for i in here if i not in paper) if not paper else ()
            cells.append(GapCell(phase, impact, tuple(paper), tuple(here), fillers))
    return GapReport(cells=tuple(cells))


def phase_counts(
    methods: Iterable[Method] | Mapping[str, Method], paper_only: bool = False
) -> dict[str, int]:
    """Methods per phase (claim 8: research concentrates on the late phases)."""
    counts = {p.value: 0 for p in PHASE_ORDER}
    for m in _methods(methods):
        if m.in_paper or not paper_only:
            counts[m.phase.value] += 1
    return counts
