"""The knowledge base: methods, evidence, hardware and formats as validated data files, stored in a
database (SQLite by default, any SQLAlchemy URL via ``SHRINKWISE_DATABASE_URL``), plus recorded runs."""
