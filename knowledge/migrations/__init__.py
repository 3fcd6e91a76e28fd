"""Alembic migrations of Shrinkwise's database (run by :func:`knowledge.migrate.upgrade` from
``knowledge.db.init_db``). See docs/database.md for how to add a revision."""
