"""A database that cannot be used as it is: damaged, or migrated by a newer Shrinkwise.

Kept free of SQLAlchemy (like :mod:`knowledge.paths`) so the CLI's entry point can catch these
errors without paying for the import. :func:`check_sqlite_file` runs before anything opens the file:
a damaged file (0 bytes, a wrong header, pages missing) is refused with :class:`DatabaseDamaged`,
never recreated or "repaired", so the history in it (or in its backup) is not lost without a word.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
#: Backups of the SQLite file go to this folder next to it (see :func:`knowledge.migrate.backup_sqlite`).
BACKUP_DIR = "backups"
#: SQLite's own words for a file that is not (or no longer) a database.
_DAMAGE_WORDS = ("malformed", "not a database", "file is encrypted", "disk image")
#: A 0-byte file this young may be a database another process is creating right now.
_YOUNG_S = 5.0


def backup_dir(path: Path) -> Path:
    """The folder that holds the backups of the SQLite file ``path``."""
    return path.parent / BACKUP_DIR


def latest_backup(path: Path) -> Path | None:
    """The newest backup of the SQLite file ``path``, if any."""
    found = sorted(backup_dir(path).glob(f"{path.stem}-*.db"))
    return found[-1] if found else None


class DatabaseFault(RuntimeError):
    """The database cannot be used as it is; the message says what to do."""


class DatabaseDamaged(DatabaseFault):
    """The database is damaged. Its message names the database and the backup to restore."""

    def __init__(self, location: str, reason: str, path: Path | None = None) -> None:
        self.location, self.reason, self.path = location, reason, path
        self.backup = latest_backup(path) if path is not None else None
        if path is None:
            todo = "restore it from your last backup (pg_dump, see docs/database.md)"
        elif self.backup is not None:
            todo = f"restore the backup at {self.backup} or move it aside"
        else:
            todo = f"restore a backup (there is none in {backup_dir(path)}) or move it aside"
        super().__init__(
            f"The database at {location} is damaged ({reason}): {todo}. "
            "Shrinkwise does not replace it; once it is moved aside, the next start creates an empty one."
        )


class DatabaseTooNew(DatabaseFault):
    """The database was migrated by a newer Shrinkwise than this one."""

    def __init__(self, location: str, revision: str, head: str, path: Path | None = None) -> None:
        self.location, self.revision, self.head = location, revision, head
        backup = latest_backup(path) if path is not None else None
        where = f"restore the backup at {backup}" if backup is not None else "use another database"
        super().__init__(
            f"The database at {location} has schema revision {revision!r}, which this version of "
            f"Shrinkwise does not know (it knows up to {head!r}): it was upgraded by a newer Shrinkwise. "
            f"Upgrade Shrinkwise, or {where}."
        )


def check_sqlite_file(path: Path) -> None:
    """Raise :class:`DatabaseDamaged` if the SQLite file ``path`` exists but is not a sound database.

    Checks, in order: a folder in its place, 0 bytes (after a short wait when the file is only seconds
    old, as another process may be creating it), the 16-byte header, and ``PRAGMA quick_check`` (which
    reads every page, so a truncated file is caught here rather than in the middle of a page).
    A missing file is fine: it is a new database.
    """
    if not path.exists():
        return
    location = str(path)
    if path.is_dir():
        raise DatabaseDamaged(location, "it is a folder, not a file", path)
    size = path.stat().st_size
    deadline = time.monotonic() + 2.0
    while size == 0 and time.time() - path.stat().st_mtime < _YOUNG_S and time.monotonic() < deadline:
        time.sleep(0.1)
        size = path.stat().st_size
    if size == 0:
        raise DatabaseDamaged(location, "the file is empty: 0 bytes", path)
    with path.open("rb") as f:
        header = f.read(len(SQLITE_HEADER))
    if header != SQLITE_HEADER:
        raise DatabaseDamaged(location, "the file does not start with SQLite's header", path)
    try:
        conn = sqlite3.connect(str(path), timeout=30)
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if not is_damage_message(str(exc)):
            raise  # "database is locked" and the like are not damage
        raise DatabaseDamaged(location, f"SQLite says: {exc}", path) from exc
    if rows != [("ok",)]:
        first = str(rows[0][0]) if rows else "no answer"
        raise DatabaseDamaged(location, f"PRAGMA quick_check: {first}", path)


def is_damage_message(message: str) -> bool:
    low = message.lower()
    return any(w in low for w in _DAMAGE_WORDS)


def damage_from(exc: BaseException, location: str, path: Path | None) -> DatabaseFault | None:
    """The :class:`DatabaseFault` behind ``exc`` (itself, or a SQLite "malformed"/"not a database"
    error anywhere in its chain, SQLAlchemy's ``.orig`` included), or None when it is something else."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DatabaseFault):
            return e
        if isinstance(e, sqlite3.DatabaseError) and is_damage_message(str(e)):
            return DatabaseDamaged(location, f"SQLite says: {e}", path)
        orig = getattr(e, "orig", None)
        todo.extend([e.__cause__, e.__context__, orig if isinstance(orig, BaseException) else None])
    return None
