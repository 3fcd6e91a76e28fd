"""Storage: where the database is, the URL switch, idempotent sync that keeps measured rows, PostgreSQL."""

from __future__ import annotations

import pytest
from sqlmodel import select

from jobs import queue
from knowledge import db
from knowledge.loader import load_all
from knowledge.tables import CompressionRun, EvidenceRow, MethodRow, SavedRecommendation


def test_default_is_a_sqlite_file_under_shrinkwise_home(isolated_home):
    assert db.database_url() == f"sqlite:///{isolated_home / 'shrinkwise.db'}"
    db.init_db()
    assert (isolated_home / "shrinkwise.db").exists()


def test_default_home_is_the_platform_user_data_dir(monkeypatch, tmp_path):
    import platformdirs

    monkeypatch.delenv(db.ENV_HOME)
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda *a, **k: str(tmp_path / "platform" / a[0]))
    assert db.data_home() == tmp_path / "platform" / "shrinkwise"


def test_database_url_env_is_honoured(monkeypatch, tmp_path, isolated_home):
    other = tmp_path / "elsewhere" / "kb.sqlite"
    monkeypatch.setenv(db.ENV_URL, f"sqlite:///{other}")
    assert db.database_url() == f"sqlite:///{other}"
    report = db.sync_catalog()
    assert other.exists() and not (isolated_home / "shrinkwise.db").exists()
    assert db.counts()["methods"] == report.methods_total > 0


def test_postgres_urls_without_driver_mean_psycopg3():
    assert db.normalize_url("postgresql://u:p@h/d") == "postgresql+psycopg://u:p@h/d"
    assert db.normalize_url("postgres://h/d") == "postgresql+psycopg://h/d"
    assert db.normalize_url("sqlite:///x.db") == "sqlite:///x.db"
    assert "secret" not in db.describe_url("postgresql+psycopg://u:secret@h/d")


def _sync_twice_keeps_measured(url=None):
    data = load_all()
    first = db.sync_catalog(url)
    assert first.methods_added == len(data.methods) and first.evidence_from_files == len(data.evidence)
    run = queue.create_run(
        model_ref="demo",
        model_name="SmolLM2-135M-Instruct",
        method="rtn",
        compressor="rtn",
        config={"bits": 4},
        url=url,
    )
    assert queue.claim_next_run("w", url=url).id == run.id
    queue.finish_run(
        run.id,
        before_metrics={"perplexity": 10.05, "size_mb": 538.0},
        after_metrics={"perplexity": 12.3, "size_mb": 90.0},
        machine="ci",
        url=url,
    )
    counts1 = db.counts(url)
    assert counts1["evidence_measured_by_runs"] == 2
    second = db.sync_catalog(url)
    assert (second.methods_added, second.methods_updated, second.methods_removed) == (0, 0, 0)
    assert second.evidence_measured_kept == 2
    assert db.counts(url) == counts1
    assert counts1["evidence"] == len(data.evidence) + 2
    assert counts1["methods"] == len(data.methods)
    return counts1


def test_sync_is_idempotent_and_keeps_measured_rows_sqlite():
    _sync_twice_keeps_measured()


def test_sync_upserts_changed_methods_and_drops_removed_ones(small_data, method_entry):
    r1 = db.sync_catalog(data_dir=small_data.root)
    assert (r1.methods_added, r1.methods_total) == (3, 3)
    small_data.methods("a.yaml", method_entry("alpha"), method_entry("beta", name="Beta Renamed"))
    (small_data.root / "methods" / "b.yaml").unlink()
    small_data.evidence("e.yaml", *[])  # evidence of the removed method must go too
    r2 = db.sync_catalog(data_dir=small_data.root)
    assert (r2.methods_added, r2.methods_updated, r2.methods_removed, r2.methods_total) == (
        0,
        2,
        1,
        2,
    )  # alpha lost its composes_with
    with db.session() as s:
        assert s.get(MethodRow, "beta").name == "Beta Renamed"
        assert s.get(MethodRow, "beta").data["name"] == "Beta Renamed"
        assert s.exec(select(EvidenceRow)).all() == []


def test_json_columns_round_trip(small_data):
    db.sync_catalog(data_dir=small_data.root)
    with db.session() as s:
        row = s.get(MethodRow, "gamma")
        assert row.data["grades"]["backward_compatibility"] == "full" and row.in_paper
        s.add(
            SavedRecommendation(constraints={"phases": ["inference"]}, result={"ranked": [{"id": "gamma"}]})
        )
    with db.session() as s:
        saved = s.exec(select(SavedRecommendation)).one()
        assert saved.result["ranked"][0]["id"] == "gamma" and saved.created_at is not None


def test_postgresql_end_to_end(postgres_url, monkeypatch):
    """The same code against a real PostgreSQL server: tables, JSONB, sync, runs, measured evidence."""
    monkeypatch.setenv(db.ENV_URL, postgres_url)
    engine = db.init_db()
    assert engine.dialect.name == "postgresql"
    from sqlalchemy import text

    with engine.connect() as conn:  # a clean slate if an earlier run left tables behind
        for table in ("evidence", "saved_recommendation", "compression_run", "method"):
            conn.execute(text(f"TRUNCATE {table} RESTART IDENTITY CASCADE"))
        conn.commit()
        col_type = conn.execute(
            text(
                "select data_type from information_schema.columns where table_name='method' and column_name='data'"
            )
        ).scalar_one()
    assert col_type == "jsonb"
    counts = _sync_twice_keeps_measured()
    with db.session() as s:
        run = s.exec(select(CompressionRun)).one()
        assert run.status == "succeeded" and run.after_metrics["perplexity"] == 12.3
        assert run.finished_at.tzinfo is not None
    from knowledge.catalog import load_catalog

    cat = load_catalog()
    assert (
        len(cat.evidence_for("rtn", measured=True)) == 5 + 2
    )  # evidence.md's five SmolLM2 RTN rows + this run's two
    assert counts["methods"] == len(cat.methods)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_syncs_do_not_fail_or_duplicate(backend, request, monkeypatch):
    """The app and a worker may start together; their syncs race on the same rows and both succeed."""
    import threading

    from sqlalchemy import text

    if backend == "postgresql":
        monkeypatch.setenv(db.ENV_URL, request.getfixturevalue("postgres_url"))
        with db.init_db().connect() as conn:
            conn.execute(
                text(
                    "TRUNCATE evidence, saved_recommendation, compression_run, method RESTART IDENTITY CASCADE"
                )
            )
            conn.commit()
    errors: list[BaseException] = []

    def sync() -> None:
        try:
            db.sync_catalog()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=sync) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    data = load_all()
    assert db.counts()["methods"] == len(data.methods)
    assert db.counts()["evidence"] == len(data.evidence)
