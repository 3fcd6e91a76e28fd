"""add a public id to runs: the unguessable id in run and job links (rows written before get one when
first read, see jobs.access)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 19:10:34.286859

SQLite runs this in batch mode (render_as_batch): changes to existing tables go inside
``with op.batch_alter_table("name") as batch:``. Keep new columns nullable or give them a
server_default, so rows written before this revision stay valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("compression_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_compression_run_public_id"), ["public_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("compression_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_compression_run_public_id"))
        batch_op.drop_column("public_id")
