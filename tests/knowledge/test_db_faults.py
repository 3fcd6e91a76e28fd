"""Database faults and migrations: a damaged SQLite file is refused (never replaced), a database made
before migrations is taken over with its rows, a backup is made first, the baseline matches the tables."""

from __future__ import annotations

import os
import sqlite3
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import Session, SQLModel, create_engine, select

from jobs import queue
from knowledge import db, migrate
from knowledge.tables import CompressionRun, EvidenceRow, JSONType

#: The first revision: the tables as ``create_all`` made them before migrations existed.
BASELINE = "0001"


def _db_file(home: Path) -> Path:
    return home / "shrinkwise.db"


def _old_schema_database(url: str, runs: int = 3) -> None:
    """A database as Shrinkwise made it before migrations (``create_all`` of the baseline's tables, no
    alembic_version), with finished runs and the evidence they measured. Written with the baseline's
    columns only, so the helper stays right when later revisions add columns to knowledge/tables.py."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    run_t = sa.table(
        "compression_run",
        *(sa.column(c) for c in ("created_at", "status", "model_ref", "model_name", "method", "compressor")),
        *(sa.column(c) for c in ("fraction", "cancel_requested", "attempts", "log_tail")),
        sa.column("config", JSONType),
    )
    ev_t = sa.table(
        "evidence",
        *(sa.column(c) for c in ("method", "model", "metric", "measured", "origin", "run_id")),
        sa.column("data", JSONType),
    )
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(migrate.config(connection=conn), BASELINE)
            conn.execute(sa.text("DROP TABLE alembic_version"))
            for i in range(runs):
                conn.execute(
                    run_t.insert().values(
                        created_at=datetime.now(timezone.utc),
                        status="succeeded",
                        model_ref="demo",
                        model_name=f"Model-{i}",
                        method="rtn",
                        compressor="rtn",
                        fraction=1.0,
                        cancel_requested=False,
                        attempts=1,
                        log_tail="x" * 2000,
                        config={"bits": 4},
                    )
                )
                run_id = conn.execute(sa.text("SELECT max(id) FROM compression_run")).scalar_one()
                conn.execute(
                    ev_t.insert().values(
                        method="rtn",
                        model=f"Model-{i}",
                        metric="perplexity",
                        measured=True,
                        origin="run",
                        run_id=run_id,
                        data={},
                    )
                )
        with engine.connect() as conn:
            assert "alembic_version" not in sa.inspect(conn).get_table_names()
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _counts(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        with Session(engine) as s:
            return len(s.exec(select(CompressionRun)).all()), len(s.exec(select(EvidenceRow)).all())
    finally:
        engine.dispose()


# --- migrations ------------------------------------------------------------------------------------


def test_old_schema_sqlite_database_keeps_its_runs_and_is_backed_up_first(isolated_home):
    path = _db_file(isolated_home)
    url = f"sqlite:///{path}"
    _old_schema_database(url)
    db.init_db()
    assert _revision(url) == migrate.head()
    assert _counts(url) == (3, 3)
    assert [r.model_name for r in queue.list_runs()] == ["Model-2", "Model-1", "Model-0"]
    backups = sorted((isolated_home / "backups").glob(f"shrinkwise-*-before-{migrate.head()}.db"))
    assert len(backups) == 1
    # the backup is the database as it was before the migration: the runs, no alembic_version
    with sqlite3.connect(backups[0]) as conn:
        assert conn.execute("SELECT count(*) FROM compression_run").fetchone() == (3,)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "alembic_version" not in names
    # the next start finds the database at the head: no migration, no second backup
    db.dispose_engines()
    db.init_db()
    assert len(list((isolated_home / "backups").glob("*.db"))) == 1


def test_new_database_needs_no_backup_and_matches_the_tables(isolated_home):
    engine = db.init_db()
    assert not (isolated_home / "backups").exists()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], (
        "knowledge/tables.py and the migrations differ: add a revision "
        f"(python -m knowledge.migrate revision 'what changed', docs/database.md): {diff}"
    )


@pytest.fixture
def fresh_pg_url(postgres_url):
    """A new, empty database on the throwaway PostgreSQL cluster."""
    name = f"sw_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = postgres_url.replace("/postgres?", f"/{name}?")
    yield url
    db.dispose_engines()
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


def test_old_schema_postgresql_database_keeps_its_runs(fresh_pg_url):
    _old_schema_database(fresh_pg_url)
    engine = db.init_db(fresh_pg_url)
    assert _revision(fresh_pg_url) == migrate.head()
    assert _counts(fresh_pg_url) == (3, 3)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_new_postgresql_database_matches_the_tables(fresh_pg_url):
    engine = db.init_db(fresh_pg_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []


def test_a_revision_that_rebuilds_a_table_keeps_the_evidence_of_runs(isolated_home, tmp_path, monkeypatch):
    """SQLite batch mode drops and re-creates compression_run; evidence refers to it ON DELETE CASCADE,
    so with foreign keys on, the migration would delete every run's evidence."""
    extra = tmp_path / "versions"
    extra.mkdir()
    head = migrate.head()
    (extra / "v9000_rebuild.py").write_text(
        "import sqlalchemy as sa\n"
        "from alembic import op\n"
        f"revision = '9000'\ndown_revision = {head!r}\nbranch_labels = None\ndepends_on = None\n"
        "def upgrade():\n"
        "    with op.batch_alter_table('compression_run', recreate='always') as batch:\n"
        "        batch.add_column(sa.Column('rebuilt_marker', sa.String(), nullable=True))\n"
        "def downgrade():\n"
        "    pass\n"
    )
    real_config = migrate.config

    def config(connection=None, url=None):
        cfg = real_config(connection, url)
        cfg.set_main_option("version_locations", f"{migrate.MIGRATIONS_DIR / 'versions'}{os.pathsep}{extra}")
        return cfg

    url = f"sqlite:///{_db_file(isolated_home)}"
    _old_schema_database(url)
    db.init_db()  # at the head of the packaged revisions
    db.dispose_engines()
    monkeypatch.setattr(migrate, "config", config)
    db.init_db()
    assert _revision(url) == "9000"
    assert _counts(url) == (3, 3)
    assert len(list((isolated_home / "backups").glob("shrinkwise-*-before-9000.db"))) == 1
    with sqlite3.connect(_db_file(isolated_home)) as conn:
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (0,)  # a new connection's default
        assert "rebuilt_marker" in {r[1] for r in conn.execute("PRAGMA table_info(compression_run)")}


def test_a_database_from_a_newer_shrinkwise_is_refused(isolated_home):
    db.init_db()
    with db.get_engine().begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    db.dispose_engines()
    with pytest.raises(db.DatabaseTooNew, match="9999.*newer Shrinkwise"):
        db.init_db()


# --- damaged files -----------------------------------------------------------------------------------


def _truncated_database(home: Path) -> bytes:
    """A database with runs, cut to half its size; returns the damaged file's bytes."""
    url = f"sqlite:///{_db_file(home)}"
    _old_schema_database(url, runs=200)
    path = _db_file(home)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    return path.read_bytes()


def test_a_truncated_database_is_refused_with_the_clear_message_and_kept(isolated_home):
    damaged = _truncated_database(isolated_home)
    path = _db_file(isolated_home)
    with pytest.raises(db.DatabaseDamaged) as info:
        queue.list_runs()
    message = str(info.value)
    assert f"The database at {path} is damaged" in message
    assert "move it aside" in message and "Traceback" not in message
    assert path.read_bytes() == damaged  # not replaced, not "repaired"
    assert not (isolated_home / "backups").exists()  # a damaged file is not migrated either


def test_the_message_names_the_latest_backup(isolated_home):
    path = _db_file(isolated_home)
    _old_schema_database(f"sqlite:///{path}")
    db.init_db()  # the migration leaves a backup
    (backup,) = (isolated_home / "backups").glob("*.db")
    db.dispose_engines()
    path.write_bytes(b"this is not a database at all" * 10)
    with pytest.raises(db.DatabaseDamaged, match=f"restore the backup at {backup}"):
        db.init_db()


def test_a_zero_byte_file_is_refused_not_recreated(isolated_home):
    path = _db_file(isolated_home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))
    with pytest.raises(db.DatabaseDamaged, match="0 bytes"):
        db.init_db()
    with pytest.raises(db.DatabaseDamaged):  # every later use says the same; the file stays empty
        queue.list_runs()
    assert path.stat().st_size == 0


def test_moving_the_damaged_file_aside_starts_afresh(isolated_home):
    path = _db_file(isolated_home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (0, 0))
    with pytest.raises(db.DatabaseDamaged):
        db.init_db()
    path.rename(path.with_suffix(".damaged"))
    assert queue.list_runs() == []


def test_a_sqlalchemy_error_from_a_damaged_file_is_recognised(isolated_home):
    path = _db_file(isolated_home)
    try:
        raise sa.exc.DatabaseError("SELECT 1", {}, sqlite3.DatabaseError("database disk image is malformed"))
    except sa.exc.DatabaseError as exc:
        fault = db.database_fault(exc)
    assert isinstance(fault, db.DatabaseDamaged) and str(path) in str(fault)
    assert (
        db.database_fault(sa.exc.OperationalError("x", {}, sqlite3.OperationalError("database is locked")))
        is None
    )


# --- the CLI -----------------------------------------------------------------------------------------


def test_cli_says_it_in_one_line(isolated_home, capsys):
    from app.cli.main import main

    _truncated_database(isolated_home)
    db.dispose_engines()
    with pytest.raises(SystemExit) as info:
        main(["kb", "load"])
    assert info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"shrinkwise: The database at {_db_file(isolated_home)} is damaged")
    assert "\n" not in err
