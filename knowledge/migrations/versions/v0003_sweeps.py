"""sweeps: several recipes run on one model (a ``sweep`` table), and each run's sweep and recipe

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 23:16:01.560299

A sweep is the parent of ordinary runs (``compression_run.sweep_id``); its status is derived from
them, so it has no status column. ``compression_run.recipe`` names the recipe a run measures, so the
recommender can show "measured on your model" for it. Both new run columns are nullable: runs stored
before this revision are runs started alone. The foreign key is named so that ``downgrade`` can drop it.

SQLite runs this in batch mode (render_as_batch): changes to existing tables go inside
``with op.batch_alter_table("name") as batch:``; knowledge.migrate turns foreign keys off while it
runs, so re-creating compression_run keeps the evidence of runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_FK = "fk_compression_run_sweep_id_sweep"


def upgrade() -> None:
    op.create_table(
        "sweep",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("model_ref", sa.String(), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("model_key", sa.String(length=120), nullable=True),
        sa.Column("calibration", _JSON, nullable=False),
        sa.Column("recipes", _JSON, nullable=False),
        sa.Column("predicted", _JSON, nullable=False),
        sa.Column("limits", _JSON, nullable=False),
        sa.Column("origin", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sweep_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sweep_model_key"), ["model_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_sweep_model_name"), ["model_name"], unique=False)
        batch_op.create_index(batch_op.f("ix_sweep_owner"), ["owner"], unique=False)
        batch_op.create_index(batch_op.f("ix_sweep_public_id"), ["public_id"], unique=True)

    with op.batch_alter_table("compression_run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sweep_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("recipe", sa.String(length=120), nullable=True))
        batch_op.create_index(batch_op.f("ix_compression_run_sweep_id"), ["sweep_id"], unique=False)
        batch_op.create_foreign_key(_FK, "sweep", ["sweep_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    with op.batch_alter_table("compression_run", schema=None) as batch_op:
        batch_op.drop_constraint(_FK, type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_compression_run_sweep_id"))
        batch_op.drop_column("recipe")
        batch_op.drop_column("sweep_id")

    with op.batch_alter_table("sweep", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sweep_public_id"))
        batch_op.drop_index(batch_op.f("ix_sweep_owner"))
        batch_op.drop_index(batch_op.f("ix_sweep_model_name"))
        batch_op.drop_index(batch_op.f("ix_sweep_model_key"))
        batch_op.drop_index(batch_op.f("ix_sweep_created_at"))

    op.drop_table("sweep")
