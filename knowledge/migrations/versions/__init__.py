"""Alembic revisions, oldest first by their number (``vNNNN_<slug>.py``)."""
