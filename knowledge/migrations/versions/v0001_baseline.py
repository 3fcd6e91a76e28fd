"""Baseline: the tables of Shrinkwise before migrations (method, compression_run, evidence,
saved_recommendation), exactly as ``SQLModel.metadata.create_all`` made them.

Revision ID: 0001
Revises:
Create Date: 2026-11-30

A database made before migrations existed has some or all of these tables and no
``alembic_version``: this revision creates only the tables it lacks and leaves the others (and
their rows) alone, so upgrading such a database keeps its history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: JSON on every backend, JSONB on PostgreSQL (as knowledge.tables.JSONType)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _method() -> None:
    op.create_table(
        "method",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phase", sa.String(length=20), nullable=False),
        sa.Column("impact", sa.String(length=10), nullable=False),
        sa.Column("family", sa.String(length=40), nullable=False),
        sa.Column("in_paper", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("family", "impact", "in_paper", "phase"):
        op.create_index(f"ix_method_{column}", "method", [column], unique=False)


def _compression_run() -> None:
    op.create_table(
        "compression_run",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("model_ref", sa.String(), nullable=False),
        sa.Column("model_name", sa.String(), nullable=False),
        sa.Column("method", sa.String(length=80), nullable=False),
        sa.Column("compressor", sa.String(length=80), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("calibration", JSON, nullable=True),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("before_metrics", JSON, nullable=True),
        sa.Column("after_metrics", JSON, nullable=True),
        sa.Column("artifacts", JSON, nullable=True),
        sa.Column("samples", JSON, nullable=True),
        sa.Column("timings", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("machine", sa.String(), nullable=True),
        sa.Column("stage", sa.String(length=120), nullable=True),
        sa.Column("fraction", sa.Float(), nullable=False),
        sa.Column("log_tail", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("worker_id", sa.String(length=120), nullable=True),
        _ts("heartbeat_at"),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("created_at", "method", "model_name", "owner", "status"):
        op.create_index(f"ix_compression_run_{column}", "compression_run", [column], unique=False)


def _evidence() -> None:
    op.create_table(
        "evidence",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=80), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("metric", sa.String(length=40), nullable=False),
        sa.Column("measured", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(length=12), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("data", JSON, nullable=False),
        _ts("created_at"),
        sa.ForeignKeyConstraint(["run_id"], ["compression_run.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("measured", "method", "metric", "model", "origin", "run_id"):
        op.create_index(f"ix_evidence_{column}", "evidence", [column], unique=False)


def _saved_recommendation() -> None:
    op.create_table(
        "saved_recommendation",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("title", sa.String(), nullable=True),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("constraints", JSON, nullable=False),
        sa.Column("result", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("created_at", "owner"):
        op.create_index(f"ix_saved_recommendation_{column}", "saved_recommendation", [column], unique=False)


#: In creation order (evidence refers to compression_run).
TABLES: dict[str, Callable[[], None]] = {
    "method": _method,
    "compression_run": _compression_run,
    "evidence": _evidence,
    "saved_recommendation": _saved_recommendation,
}


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in TABLES.items():
        if name not in existing:
            create()


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
