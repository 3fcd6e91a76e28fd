"""Database tables (SQLModel): methods, evidence, compression runs and saved recommendations.

Each table keeps a few indexed columns for filtering plus the full pydantic object as JSON, so a
field added to :mod:`knowledge.schema` needs no migration. The JSON type is SQLAlchemy's generic
``JSON`` (stored as text on SQLite, as ``JSONB`` on PostgreSQL), so the same code runs on both.

``CompressionRun`` is also the job queue of the "Run it" page: a row is created ``queued``, a worker
claims it (``running``, with ``worker_id`` and ``heartbeat_at``), reports progress into it, and ends it
``succeeded``, ``failed`` or ``cancelled``. The status column is the single source of truth, so a page
reload or a second tab only reads it, and a restarted server can find jobs whose worker died.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

#: JSON on every backend, JSONB (indexable, compact) on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_public_id() -> str:
    """An unguessable id for links to a run (96 random bits, URL-safe): links never use the row id."""
    return secrets.token_urlsafe(12)


def _json(**kw: Any) -> Any:
    return Field(sa_column=Column(JSONType, nullable=kw.pop("nullable", False)), **kw)


def _ts(nullable: bool = True, index: bool = False, default_now: bool = False) -> Any:
    col = Column(DateTime(timezone=True), nullable=nullable, index=index)
    if default_now:
        return Field(default_factory=utcnow, sa_column=col)
    return Field(default=None, sa_column=col)


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)


class EvidenceOrigin(str, Enum):
    """Where an evidence row came from; decides what ``sync_catalog`` may replace."""

    DATA_FILE = "data-file"  # knowledge/data/evidence/*.yaml: replaced on every sync
    RUN = "run"  # a Shrinkwise compression run: kept forever (until its run is deleted)

    def __str__(self) -> str:
        return self.value


class MethodRow(SQLModel, table=True):
    __tablename__ = "method"

    id: str = Field(primary_key=True, max_length=80)
    name: str = Field(max_length=200)
    phase: str = Field(index=True, max_length=20)
    impact: str = Field(index=True, max_length=10)
    family: str = Field(index=True, max_length=40)
    in_paper: bool = Field(default=False, index=True)
    position: int = Field(default=0, description="Order in the data files, so queries can keep it.")
    data: dict[str, Any] = _json()  # Method.model_dump(mode="json")
    updated_at: datetime | None = _ts(default_now=True)


class CompressionRun(SQLModel, table=True):
    """One compression of one model by one method: a job while it runs, a record afterwards."""

    __tablename__ = "compression_run"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime | None = _ts(nullable=False, index=True, default_now=True)
    status: str = Field(default=RunStatus.QUEUED.value, index=True, max_length=12)

    # what to do
    model_ref: str = Field(description="Where the model is: 'demo', a server path, an upload folder.")
    model_name: str = Field(index=True, description="Readable model name, e.g. 'SmolLM2-135M-Instruct'.")
    # Two ids, often spelled alike but not interchangeable: measured evidence is filed under ``method``,
    # so it must be a knowledge-base method id (JobSpec.validate checks the compressor implements it).
    method: str = Field(
        index=True, max_length=80, description="Knowledge-base method id, e.g. 'magnitude-pruning'."
    )
    compressor: str = Field(max_length=80, description="Bundled compressor id that ran it, e.g. 'magnitude'.")
    config: dict[str, Any] = _json(default_factory=dict)
    calibration: dict[str, Any] | None = _json(default=None, nullable=True)  # source of calibration/eval text
    owner: str | None = Field(
        default=None, index=True, description="Who queued it: the signed-in e-mail, or 'local' (jobs.access)."
    )
    # The id in links (``/run_result?run=<public_id>``); None only for runs stored before it existed.
    public_id: str | None = Field(
        default_factory=new_public_id, nullable=True, unique=True, index=True, max_length=32
    )
    # A sweep's child (jobs.sweeps): its sweep and the recipe it measures; None for a run started alone.
    sweep_id: int | None = Field(default=None, foreign_key="sweep.id", index=True, ondelete="SET NULL")
    recipe: str | None = Field(
        default=None, max_length=120, description="The recipe it measures, e.g. 'gptq-w4a16-g128'."
    )

    # results
    before_metrics: dict[str, Any] | None = _json(default=None, nullable=True)
    after_metrics: dict[str, Any] | None = _json(default=None, nullable=True)
    artifacts: dict[str, Any] | None = _json(
        default=None, nullable=True
    )  # name -> path (checkpoint, export, report)
    samples: dict[str, Any] | None = _json(default=None, nullable=True)  # greedy generations before/after
    timings: dict[str, Any] | None = _json(default=None, nullable=True)  # stage -> seconds
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    machine: str | None = Field(default=None, description="Where it ran, for 'measured here on ...'.")

    # progress, written by the worker while it runs
    stage: str | None = Field(default=None, max_length=120)
    fraction: float = Field(default=0.0)
    log_tail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    cancel_requested: bool = Field(default=False)

    # worker bookkeeping
    worker_id: str | None = Field(default=None, max_length=120)
    heartbeat_at: datetime | None = _ts()
    started_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    attempts: int = Field(default=0)

    @property
    def stored_id(self) -> int:
        """The primary key; ``id`` is typed optional only because it is assigned on the first insert."""
        if self.id is None:
            raise ValueError("this run has not been stored yet: it has no id")
        return self.id

    @property
    def run_status(self) -> RunStatus:
        return RunStatus(self.status)

    @property
    def elapsed_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return (_aware(end) - _aware(self.started_at)).total_seconds()


def _aware(ts: datetime) -> datetime:
    """SQLite gives back naive datetimes; all of ours are UTC."""
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)


class EvidenceRow(SQLModel, table=True):
    __tablename__ = "evidence"

    id: int | None = Field(default=None, primary_key=True)
    method: str = Field(index=True, max_length=80)
    model: str = Field(index=True)
    metric: str = Field(index=True, max_length=40)
    measured: bool = Field(default=False, index=True)
    origin: str = Field(default=EvidenceOrigin.DATA_FILE.value, index=True, max_length=12)
    run_id: int | None = Field(default=None, foreign_key="compression_run.id", index=True, ondelete="CASCADE")
    data: dict[str, Any] = _json()  # Evidence.model_dump(mode="json")
    created_at: datetime | None = _ts(default_now=True)


class Sweep(SQLModel, table=True):
    """Several recipes run on one model with one shared calibration and evaluation text (``jobs.sweeps``).

    A parent of ordinary jobs: each child is a ``CompressionRun`` with ``sweep_id`` set, run by whatever
    backend runs jobs. The sweep keeps no status of its own: it is derived from its children, so it can
    never disagree with them. What the recommender predicted for each recipe and the user's limits are
    stored as they were when the sweep started, so the page compares the measurements with the
    prediction that led to them, even after the knowledge base (or the measured evidence) changed.
    """

    __tablename__ = "sweep"

    id: int | None = Field(default=None, primary_key=True)
    public_id: str = Field(default_factory=new_public_id, unique=True, index=True, max_length=32)
    created_at: datetime | None = _ts(nullable=False, index=True, default_now=True)
    owner: str | None = Field(default=None, index=True)
    model_ref: str = Field(description="Where the model is, as a job's model_ref.")
    model_name: str = Field(index=True)
    # The bundled model shape the recommendation was made for (engine constraints' ``model``), so the
    # recommender can show "measured on your model" for that model; None when unknown.
    model_key: str | None = Field(default=None, index=True, max_length=120)
    calibration: dict[str, Any] = _json(default_factory=dict)  # shared by every child
    recipes: list[Any] = _json(
        default_factory=list
    )  # [{recipe, name, method, compressor, config, neighbour_of}]
    predicted: dict[str, Any] = _json(default_factory=dict)  # recipe id -> the recommender's point
    limits: dict[str, Any] = _json(default_factory=dict)  # {memory_gb, max_quality_drop, constraints}
    origin: str = Field(default="compress", max_length=20)  # "recommendation" | "compress"

    @property
    def stored_id(self) -> int:
        if self.id is None:
            raise ValueError("this sweep has not been stored yet: it has no id")
        return self.id


class SavedRecommendation(SQLModel, table=True):
    __tablename__ = "saved_recommendation"

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime | None = _ts(nullable=False, index=True, default_now=True)
    title: str | None = Field(default=None)
    owner: str | None = Field(default=None, index=True)
    constraints: dict[str, Any] = _json()
    result: dict[str, Any] = _json()
