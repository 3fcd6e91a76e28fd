"""Where the knowledge base lives on disk (or on a server), and how the data files get into it.

- ``SHRINKWISE_DATABASE_URL``: any SQLAlchemy URL, e.g. ``postgresql+psycopg://user:pw@host/db``
  (``postgresql://`` and ``postgres://`` are taken to mean psycopg 3, the driver Shrinkwise installs).
- Otherwise a SQLite file ``shrinkwise.db`` in the per-user data folder
  (``platformdirs.user_data_dir("shrinkwise")``, or ``SHRINKWISE_HOME`` when set).

:func:`init_db` refuses a damaged SQLite file (:class:`DatabaseDamaged`) and migrates the schema with
Alembic (:mod:`knowledge.migrate`, backup first); docs/database.md says where the backups are.

:func:`sync_catalog` loads the data files into the tables and can run any number of times: methods
are upserted, evidence from the data files is replaced, and evidence measured by users' runs is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import event, func, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session, col, create_engine, delete, select

from knowledge import tables
from knowledge.faults import DatabaseDamaged as DatabaseDamaged
from knowledge.faults import DatabaseFault as DatabaseFault
from knowledge.faults import DatabaseTooNew as DatabaseTooNew
from knowledge.loader import DATA_DIR, KnowledgeData, load_all
from knowledge.paths import (  # noqa: F401  (re-exported: db is where callers look for them)
    DB_FILENAME,
    ENV_HOME,
    ENV_URL,
    data_home,
    database_exists,
    database_url,
    default_database_url,
    normalize_url,
    sqlite_path,
)
from knowledge.tables import EvidenceOrigin, EvidenceRow, MethodRow, utcnow

log = logging.getLogger(__name__)

_engines: dict[str, Engine] = {}
_initialized: set[str] = set()
_lock = threading.Lock()


def describe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the app read while a worker process writes progress; foreign keys for run -> evidence
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def get_engine(url: str | None = None) -> Engine:
    """The (cached) SQLAlchemy engine for ``url`` or :func:`database_url`."""
    url = normalize_url(url) if url else database_url()
    with _lock:
        engine = _engines.get(url)
        if engine is not None:
            return engine
        u = make_url(url)
        if u.get_backend_name() == "sqlite":
            path = sqlite_path(url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            # an unreachable server should fail in seconds, not hang the app (override in the URL)
            connect_args = (
                {"connect_timeout": 10}
                if "connect_timeout" not in u.query and u.get_backend_name() == "postgresql"
                else {}
            )
            engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        _engines[url] = engine
        log.debug("database engine for %s", describe_url(url))
        return engine


def dispose_engines() -> None:
    """Close every cached engine (tests that switch databases; worker processes after fork)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _initialized.clear()


def init_db(url: str | None = None) -> Engine:
    """Check the database and bring its schema to the newest revision, once per process; returns the engine.

    - A SQLite file that exists but is damaged (0 bytes, not SQLite, pages missing) raises
      :class:`DatabaseDamaged` naming the file and its newest backup; it is never replaced or recreated.
    - The schema is migrated with Alembic (:mod:`knowledge.migrate`): a new database gets every table,
      one made before migrations existed is taken over without touching its rows, and a SQLite file
      is copied to ``backups/`` next to it before any revision changes it.

    Safe when two processes start together: if the other one created a table between our check and
    our CREATE, the error is ignored and the migration runs again (PostgreSQL takes a lock instead).
    """
    url = normalize_url(url) if url else database_url()
    engine = get_engine(url)
    key = str(engine.url)
    if key in _initialized:  # queue functions call this on every use; check the schema once per process
        return engine
    from knowledge import faults, migrate

    path = sqlite_path(url)
    try:
        if path is not None:
            faults.check_sqlite_file(path)
        for attempt in range(3):
            try:
                migrate.upgrade(engine)
                break
            except (OperationalError, ProgrammingError, IntegrityError) as exc:
                if (
                    attempt == 2
                    or "already exists" not in str(exc).lower()
                    and "duplicate" not in str(exc).lower()
                ):
                    raise
                time.sleep(0.2)
    except Exception as exc:
        fault = database_fault(exc, url)
        if fault is None:
            raise
        forget_engine(url)  # no pooled connection stays on the damaged file; moving it aside is enough
        if fault is exc:
            raise
        raise fault from exc
    _initialized.add(key)
    return engine


def database_fault(exc: BaseException, url: str | None = None) -> DatabaseFault | None:
    """The :class:`DatabaseFault` that ``exc`` means for the database at ``url`` (a damaged SQLite file
    behind a SQLAlchemy error, say), or None when ``exc`` is some other error."""
    from knowledge import faults

    url = normalize_url(url) if url else database_url()
    return faults.damage_from(exc, describe_url(url), sqlite_path(url))


def forget_engine(url: str | None = None) -> None:
    """Close and drop the cached engine of ``url`` (the next use opens the database afresh)."""
    url = normalize_url(url) if url else database_url()
    with _lock:
        engine = _engines.pop(url, None)
        if engine is not None:
            _initialized.discard(str(engine.url))
            engine.dispose()


@contextmanager
def session(url: str | None = None) -> Iterator[Session]:
    """A session that commits when the block ends and rolls back on an exception.

    Objects stay readable after the block (``expire_on_commit=False``), so a function can return rows.
    """
    with Session(get_engine(url), expire_on_commit=False) as s:
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise


@dataclass(frozen=True)
class SyncReport:
    """What :func:`sync_catalog` did, and what the database holds afterwards."""

    methods_added: int
    methods_updated: int
    methods_removed: int
    methods_total: int
    evidence_from_files: int
    evidence_measured_kept: int

    def __str__(self) -> str:
        return (
            f"{self.methods_total} methods ({self.methods_added} added, {self.methods_updated} updated, "
            f"{self.methods_removed} removed), {self.evidence_from_files} evidence rows from the data files, "
            f"{self.evidence_measured_kept} measured by runs kept"
        )


def sync_catalog(
    url: str | None = None, data: KnowledgeData | None = None, data_dir: Path | str = DATA_DIR
) -> SyncReport:
    """Load the (validated) data files into the database, in one transaction; safe to run repeatedly.

    Methods are upserted by id (rows for ids no longer in the files are deleted), evidence rows from
    the data files are replaced, evidence rows added by runs (``origin='run'``) are left untouched.
    """
    data = data or load_all(data_dir)
    init_db(url)
    for attempt in range(3):
        try:
            return _sync(url, data)
        except (IntegrityError, OperationalError) as exc:
            # another process (the app and a worker starting together) synced at the same moment
            if attempt == 2:
                raise
            log.info("sync_catalog raced another writer (%s); retrying", type(exc).__name__)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


#: Key of the PostgreSQL advisory lock that serialises syncs (any fixed 64-bit number).
_SYNC_LOCK_KEY = 0x5348524B  # "SHRK"


def _sync(url: str | None, data: KnowledgeData) -> SyncReport:
    added = updated = 0
    with session(url) as s:
        conn = s.connection()
        if conn.dialect.name == "postgresql":
            # two syncs at once would each delete the (not yet committed) rows of the other and both
            # insert: serialise them; the lock ends with the transaction. SQLite serialises writers itself.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SYNC_LOCK_KEY})
        existing = {row.id: row for row in s.exec(select(MethodRow)).all()}
        wanted = set()
        for position, m in enumerate(data.methods):
            wanted.add(m.id)
            payload = m.model_dump(mode="json")
            row = existing.get(m.id)
            if row is None:
                s.add(
                    MethodRow(
                        id=m.id,
                        name=m.name,
                        phase=m.phase.value,
                        impact=m.impact.value,
                        family=m.family.value,
                        in_paper=m.in_paper,
                        position=position,
                        data=payload,
                    )
                )
                added += 1
            elif row.data != payload or row.position != position:
                row.name, row.phase, row.impact = m.name, m.phase.value, m.impact.value
                row.family, row.in_paper, row.position, row.data = (
                    m.family.value,
                    m.in_paper,
                    position,
                    payload,
                )
                row.updated_at = utcnow()
                s.add(row)
                updated += 1
        stale = [row for mid, row in existing.items() if mid not in wanted]
        for row in stale:
            log.info("method %r is no longer in the data files; removing it from the database", row.id)
            s.delete(row)
        s.exec(delete(EvidenceRow).where(col(EvidenceRow.origin) == EvidenceOrigin.DATA_FILE.value))
        for ev in data.evidence:
            s.add(
                EvidenceRow(
                    method=ev.method,
                    model=ev.model,
                    metric=ev.metric.value,
                    measured=ev.measured_here,
                    origin=EvidenceOrigin.DATA_FILE.value,
                    data=ev.model_dump(mode="json"),
                )
            )
        s.flush()
        kept = s.exec(
            select(func.count())
            .select_from(EvidenceRow)
            .where(EvidenceRow.origin == EvidenceOrigin.RUN.value)
        ).one()
        total = s.exec(select(func.count()).select_from(MethodRow)).one()
    from knowledge.catalog import clear_cache

    clear_cache()
    return SyncReport(
        methods_added=added,
        methods_updated=updated,
        methods_removed=len(stale),
        methods_total=int(total),
        evidence_from_files=len(data.evidence),
        evidence_measured_kept=int(kept),
    )


def counts(url: str | None = None) -> dict[str, int]:
    """Rows per table (for `kb load` and tests)."""
    init_db(url)
    out = {}
    with session(url) as s:
        for name, model in (
            ("methods", MethodRow),
            ("evidence", EvidenceRow),
            ("runs", tables.CompressionRun),
            ("saved_recommendations", tables.SavedRecommendation),
        ):
            out[name] = int(s.exec(select(func.count()).select_from(model)).one())
        out["evidence_measured_by_runs"] = int(
            s.exec(
                select(func.count())
                .select_from(EvidenceRow)
                .where(EvidenceRow.origin == EvidenceOrigin.RUN.value)
            ).one()
        )
    return out
