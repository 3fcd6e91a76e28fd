"""Resources every page shares, loaded once per server process with Streamlit's caches, and the
session-state keys the pages use to talk to each other.

The knowledge base (methods + evidence) and the engine's derived views (gap report, rules) are read
from data files that do not change while the app runs, so they are ``st.cache_resource`` singletons.
A recommendation is cheap (milliseconds) but is cached per set of constraints so that switching pages
and coming back does not recompute it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import streamlit as st
import yaml

from app.figures.phase_map import run_id_of

log = logging.getLogger(__name__)

#: Session-state keys shared between pages (each page's own widgets use a page prefix instead).
METHOD_ID = "sw_method_id"  # the method the method page shows
RECOMMENDATION = "sw_recommendation"  # the last Recommendation the Recommend page computed
CONSTRAINTS = "sw_constraints"  # the Constraints behind it

#: Page files, relative to app/main.py, so st.switch_page and AppTest.switch_page agree.
PAGE_RECOMMEND = "views/recommend.py"
PAGE_MAP = "views/map.py"
PAGE_CATALOGUE = "views/catalogue.py"
PAGE_METHOD = "views/method.py"
PAGE_ABOUT = "views/about.py"
PAGE_COMPRESS = "views/compress.py"  # the "Run it" pages (issue 7), when registered in app/main.py
PAGE_SWEEP = "views/sweep.py"  # several recipes on one model (issue 14)


def catalog():
    """The validated knowledge base: methods and evidence from knowledge/data, plus the evidence that
    runs measured here (from the database).

    Loaded once per process by ``knowledge.catalog.load_catalog``'s own cache rather than
    ``st.cache_resource``: ``knowledge.runs`` clears that cache when a run records new evidence, so the
    pages show "measured here" rows at once, which a Streamlit cache would hide until a restart.
    """
    from knowledge.catalog import load_catalog

    base = load_catalog()
    hidden = _hidden_runs(base)
    if not hidden:
        return base
    # One filtered copy per (catalog, hidden runs), kept alive so that caches keyed by id() stay right.
    key = (id(base), hidden)
    entry = _FILTERED.get(key)
    if entry is None or entry[0] is not base:
        if len(_FILTERED) > 256:
            _FILTERED.clear()
        from knowledge.catalog import Catalog

        kept = tuple(e for e in base.evidence if run_id_of(e) not in hidden)
        entry = (base, Catalog(base.methods, kept, base.hardware, base.formats, base.engines))
        _FILTERED[key] = entry
    return entry[1]


#: (id of the full catalog, runs hidden from a viewer) -> (that catalog, the copy without their evidence)
_FILTERED: dict[tuple[int, frozenset[int]], tuple[Any, Any]] = {}


def _hidden_runs(cat: Any) -> frozenset[int]:
    """Runs whose measured evidence this viewer may not see: other users' runs (none for an admin or
    the local user). Team members see only their own runs' figures on every page (issue 15)."""
    run_ids = {rid for e in cat.evidence if (rid := run_id_of(e)) is not None}
    if not run_ids:
        return frozenset()
    from app import auth
    from jobs.access import AccessDenied

    try:
        viewer = auth.viewer()
    except AccessDenied:
        return frozenset(run_ids)
    if viewer.is_admin:
        return frozenset()
    try:
        from jobs import queue

        mine = {r.id for r in queue.list_runs(owner=viewer.user)}
    except Exception:  # no database: hide every run's figures rather than show others'
        log.exception("cannot read the runs' owners; measured figures of runs are hidden")
        mine = set()
    return frozenset(run_ids - mine)


@st.cache_resource(show_spinner=False)
def database():
    """The database engine (SQLite file by default, ``SHRINKWISE_DATABASE_URL`` for any SQLAlchemy URL),
    its tables created once per server process; open sessions with ``knowledge.db.session()``.
    Returns None when it cannot be opened: the pages read methods from the data files, so the app
    stays usable and the log says why."""
    try:
        from knowledge import db

        return db.init_db()
    except Exception:  # the app must still open on a read-only or misconfigured database
        log.exception("database unavailable; pages fall back to the data files")
        return None


@st.cache_resource(show_spinner=False, max_entries=4)
def _gap_report(_catalog, key: int):
    from engine.gaps import gap_report as build

    return build(_catalog)


def gap_report():
    """The engine's phase x impact gap analysis of the current catalog (cached per catalog)."""
    cat = catalog()
    return _gap_report(cat, id(cat))


def rules_path() -> Path:
    import engine

    return Path(engine.__file__).parent / "rules" / "rules.yaml"


@st.cache_resource(show_spinner=False)
def rules() -> list[dict[str, Any]]:
    """The recommender's rules as written in the rules file, for the About page."""
    data = yaml.safe_load(rules_path().read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("rules", [])
    return list(data or [])


def method_name(method_id: str) -> str:
    m = catalog().methods.get(method_id)
    return m.name if m else method_id


def open_method(method_id: str) -> None:
    """Switch to the method page for ``method_id`` (kept in session state and in the URL)."""
    st.session_state[METHOD_ID] = method_id
    st.switch_page(PAGE_METHOD, query_params={"id": method_id})


@st.cache_resource(show_spinner=False, max_entries=64)
def _recommend_cached(_catalog, key: int, query: tuple[tuple[str, str], ...]):
    from engine.constraints import Constraints
    from engine.recommend import recommend as run

    return run(
        Constraints.from_query(dict(query)), _catalog.methods, _catalog.evidence, recipes=_catalog.recipes
    )


def recommend(constraints):
    """The engine's recommendation for ``constraints`` over the current catalog (cached per
    constraints and catalog, so new measured evidence gives a fresh recommendation)."""
    cat = catalog()
    return _recommend_cached(cat, id(cat), tuple(sorted(constraints.to_query().items())))
