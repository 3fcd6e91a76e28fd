"""Where Shrinkwise keeps its files and which database it uses, without importing SQLAlchemy.

Kept apart from :mod:`knowledge.db` so that reading the catalog when no database exists yet (a first
``shrinkwise kb list``) does not pay for importing SQLAlchemy and SQLModel (about a second).

- ``SHRINKWISE_HOME``: the per-user data folder; default ``platformdirs.user_data_dir("shrinkwise")``.
- ``SHRINKWISE_DATABASE_URL``: any SQLAlchemy URL; default the SQLite file ``shrinkwise.db`` there.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

ENV_URL = "SHRINKWISE_DATABASE_URL"
ENV_HOME = "SHRINKWISE_HOME"
DB_FILENAME = "shrinkwise.db"


def data_home() -> Path:
    """Shrinkwise's per-user data folder (database, uploads, run outputs); created when missing."""
    home = os.environ.get(ENV_HOME)
    if home:
        path = Path(home).expanduser()
    else:
        import platformdirs

        path = Path(platformdirs.user_data_dir("shrinkwise", appauthor=False))
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_database_url() -> str:
    return f"sqlite:///{data_home() / DB_FILENAME}"


def normalize_url(url: str) -> str:
    """Map driver-less PostgreSQL URLs to psycopg 3 (SQLAlchemy would otherwise ask for psycopg2)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def database_url() -> str:
    """The URL in use: ``SHRINKWISE_DATABASE_URL`` if set, else the SQLite file in the data folder."""
    url = os.environ.get(ENV_URL, "").strip()
    return normalize_url(url) if url else default_database_url()


def sqlite_path(url: str | None = None) -> Path | None:
    """The file of a SQLite URL (None for in-memory SQLite or another database)."""
    url = url or database_url()
    if not url.startswith("sqlite"):
        return None
    _, _, rest = url.partition(":///")
    path = unquote(rest.split("?", 1)[0])
    if not path or path == ":memory:":
        return None
    return Path(path)


def database_exists(url: str | None = None) -> bool:
    """False only when the database is a SQLite file that is not there yet (reading creates nothing)."""
    path = sqlite_path(url)
    return path is None or path.exists()
