"""A fresh data folder and SQLite database for every job-runner test."""

from __future__ import annotations

import pytest

from tests.knowledge.conftest import postgres_url  # noqa: F401  (the queue tests' PostgreSQL server)


@pytest.fixture
def home(tmp_path, monkeypatch):
    from knowledge import db

    monkeypatch.setenv("SHRINKWISE_HOME", str(tmp_path))
    monkeypatch.delenv("SHRINKWISE_DATABASE_URL", raising=False)
    monkeypatch.setenv("FAKE_JOB_LOG", str(tmp_path / "executed.txt"))
    db.dispose_engines()
    db.init_db()
    yield tmp_path
    db.dispose_engines()


def executed(home) -> list[int]:
    path = home / "executed.txt"
    return [int(x) for x in path.read_text().split()] if path.exists() else []
