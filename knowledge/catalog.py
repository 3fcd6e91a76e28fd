"""The knowledge base in memory: what the engine and the app read.

A :class:`Catalog` is immutable and cheap to share (the app caches one per process). It holds the
validated data files plus, when asked, the evidence measured by Shrinkwise's own runs from the
database, so a recommendation can use "measured here" figures beside the papers'.

Loading parses YAML and validates with pydantic (tens of milliseconds); :func:`load_catalog` caches
the result. Nothing here imports torch; the database is touched only when ``include_measured`` is
true and a database already exists (reading never creates one).
"""

from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from knowledge.loader import DATA_DIR, KnowledgeData, load_all
from knowledge.recipes import Recipe
from knowledge.schema import (
    PHASE_ORDER,
    EngineInfo,
    Evidence,
    FormatInfo,
    Hardware,
    HardwareInfo,
    Impact,
    Method,
    Phase,
    ServingEngine,
)

log = logging.getLogger(__name__)

#: The eight cells of the paper's grid, in the map's order: phases left to right, static first.
CELLS: tuple[tuple[Phase, Impact], ...] = tuple(
    (p, i) for p in PHASE_ORDER for i in (Impact.STATIC, Impact.DYNAMIC)
)


class UnknownMethodError(KeyError):
    """A method id that is not in the catalog; the message lists the closest known ids."""

    def __init__(self, method_id: str, known: Iterable[str]):
        self.method_id = method_id
        self.suggestions = difflib.get_close_matches(method_id, list(known), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown method id {method_id!r}{hint} (`shrinkwise kb list` shows all ids)")

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


@dataclass(frozen=True)
class Catalog:
    """Methods (in file order), evidence, hardware targets, formats, serving engines and recipes."""

    methods: Mapping[str, Method]
    evidence: tuple[Evidence, ...]
    hardware: Mapping[Hardware, HardwareInfo] = field(default_factory=lambda: MappingProxyType({}))
    formats: Mapping[str, FormatInfo] = field(default_factory=lambda: MappingProxyType({}))
    engines: Mapping[ServingEngine, EngineInfo] = field(default_factory=lambda: MappingProxyType({}))
    recipes: Mapping[str, Recipe] = field(default_factory=lambda: MappingProxyType({}))

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_data(cls, data: KnowledgeData, extra_evidence: Iterable[Evidence] = ()) -> Catalog:
        return cls.build(
            data.methods,
            tuple(data.evidence) + tuple(extra_evidence),
            data.hardware,
            data.formats,
            data.engines,
            data.recipes,
        )

    @classmethod
    def build(
        cls,
        methods: Iterable[Method],
        evidence: Iterable[Evidence] = (),
        hardware: Iterable[HardwareInfo] = (),
        formats: Iterable[FormatInfo] = (),
        engines: Iterable[EngineInfo] = (),
        recipes: Iterable[Recipe] = (),
    ) -> Catalog:
        """A catalog from already validated objects (tests build small ones this way)."""
        by_id: dict[str, Method] = {}
        for m in methods:
            if m.id in by_id:
                raise ValueError(f"duplicate method id {m.id!r}")
            by_id[m.id] = m
        return cls(
            methods=MappingProxyType(by_id),
            evidence=tuple(evidence),
            hardware=MappingProxyType({h.id: h for h in hardware}),
            formats=MappingProxyType({f.id: f for f in formats}),
            engines=MappingProxyType({e.id: e for e in engines}),
            recipes=MappingProxyType({r.id: r for r in recipes}),
        )

    def with_evidence(self, extra: Iterable[Evidence]) -> Catalog:
        """A copy with more evidence rows (e.g. a run just measured)."""
        return Catalog(
            self.methods,
            self.evidence + tuple(extra),
            self.hardware,
            self.formats,
            self.engines,
            self.recipes,
        )

    def recipes_of(self, method_id: str) -> tuple[Recipe, ...]:
        """The recipes of one method, in id order."""
        return tuple(r for rid, r in sorted(self.recipes.items()) if r.method == method_id)

    # -- queries -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.methods)

    def __contains__(self, method_id: object) -> bool:
        return method_id in self.methods

    def method(self, method_id: str) -> Method:
        """The method with this id; :class:`UnknownMethodError` (a KeyError) lists close ids."""
        try:
            return self.methods[method_id]
        except KeyError:
            raise UnknownMethodError(method_id, self.methods) from None

    def suggest(self, method_id: str, n: int = 5) -> list[str]:
        """Known ids closest to ``method_id`` (for "did you mean")."""
        return difflib.get_close_matches(method_id, list(self.methods), n=n, cutoff=0.5)

    def by_cell(self) -> dict[tuple[Phase, Impact], tuple[Method, ...]]:
        """Methods per (phase, impact) cell; all eight cells present, in map order, methods in file order."""
        cells: dict[tuple[Phase, Impact], list[Method]] = {cell: [] for cell in CELLS}
        for m in self.methods.values():
            cells[m.cell].append(m)
        return {cell: tuple(ms) for cell, ms in cells.items()}

    def in_cell(self, phase: Phase | str, impact: Impact | str) -> tuple[Method, ...]:
        return self.by_cell()[(Phase(phase), Impact(impact))]

    def paper_methods(self) -> tuple[Method, ...]:
        """The paper's eight (Table 1), in file order."""
        return tuple(m for m in self.methods.values() if m.in_paper)

    def filter(
        self,
        *,
        paper_only: bool = False,
        phase: Phase | str | None = None,
        impact: Impact | str | None = None,
        family: str | None = None,
    ) -> tuple[Method, ...]:
        out = []
        for m in self.methods.values():
            if paper_only and not m.in_paper:
                continue
            if phase is not None and m.phase != Phase(phase):
                continue
            if impact is not None and m.impact != Impact(impact):
                continue
            if family is not None and m.family.value != str(family):
                continue
            out.append(m)
        return tuple(out)

    def evidence_for(self, method_id: str, *, measured: bool | None = None) -> tuple[Evidence, ...]:
        """Evidence rows of one method; ``measured=True`` only Shrinkwise's own, ``False`` only papers'."""
        return tuple(
            e
            for e in self.evidence
            if e.method == method_id and (measured is None or e.measured_here == measured)
        )


def _measured_from_db() -> tuple[Evidence, ...]:
    """Evidence that users' runs added to the database; empty when there is no database yet."""
    from knowledge import paths

    if not paths.database_exists():  # checked before importing SQLAlchemy: a first run stays fast
        return ()
    try:
        from knowledge import db, paths, runs
    except ImportError as exc:  # sqlmodel missing: the catalog still works from the files
        log.warning("measured evidence unavailable (%s)", exc)
        return ()
    try:
        return tuple(runs.measured_evidence())
    except Exception as exc:  # a broken or unreachable database must not take the catalog down
        log.warning(
            "could not read measured evidence from %s: %s", db.describe_url(paths.database_url()), exc
        )
        return ()


@functools.lru_cache(maxsize=8)
def _cached(include_measured: bool, data_dir: str, database_url: str | None) -> Catalog:
    data = load_all(Path(data_dir))
    extra: tuple[Evidence, ...] = ()
    if include_measured:
        known = {m.id for m in data.methods}
        extra = tuple(e for e in _measured_from_db() if e.method in known)
    return Catalog.from_data(data, extra)


def load_catalog(include_measured: bool = True, data_dir: Path | str | None = None) -> Catalog:
    """The catalog of the data files (plus measured evidence from the database), cached.

    The cache key includes the database URL, so switching ``SHRINKWISE_DATABASE_URL`` gives a fresh
    catalog. Call :func:`clear_cache` after writing evidence (``knowledge.runs`` does).
    Raises :class:`knowledge.loader.DataFileError` when a data file is invalid.
    """
    url: str | None = None
    if include_measured:
        from knowledge.paths import database_url

        url = database_url()
    return _cached(include_measured, str(Path(data_dir or DATA_DIR).resolve()), url)


def clear_cache() -> None:
    """Forget cached catalogs (after data files or measured evidence changed)."""
    _cached.cache_clear()
