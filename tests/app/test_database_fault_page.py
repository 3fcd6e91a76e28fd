"""A damaged database gives a clear page (where it is, the backup, move it aside), not a traceback, on
every page that reads runs; the file is left as it was."""

from __future__ import annotations

import pytest

from knowledge import db
from knowledge.tables import CompressionRun
from tests.app.conftest import open_page


def _damage(home) -> bytes:
    """A database with runs, cut to half its size (as a full disk or a bad copy leaves it)."""
    import sqlite3

    db.init_db()
    with db.session() as s:
        for i in range(200):
            s.add(
                CompressionRun(
                    model_ref="demo", model_name=f"M{i}", method="rtn", compressor="rtn", log_tail="x" * 2000
                )
            )
    db.dispose_engines()
    path = home / "shrinkwise.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("page", "query"), [("history", None), ("compress", None), ("run_result", {"run": "1"})]
)
def test_damaged_database_gives_a_clear_page(home, page, query):
    damaged = _damage(home)
    at = open_page(page, query)  # fails the test on any exception shown on the page
    errors = [e.value.replace("\\", "") for e in at.error]
    assert any(f"The database at {home / 'shrinkwise.db'} is damaged" in e for e in errors), errors
    assert any("move it aside" in e for e in errors)
    assert (home / "shrinkwise.db").read_bytes() == damaged


def test_a_zero_byte_database_gives_the_clear_page_and_stays_empty(home):
    import os

    path = home / "shrinkwise.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path, (0, 0))
    at = open_page("history")
    assert any("0 bytes" in e.value for e in at.error), [e.value for e in at.error]
    assert path.stat().st_size == 0
