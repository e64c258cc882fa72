"""Tables of the seed's data model (`job_definitions`, `job_runs`, `tasks`) plus what the
engine needs: a run's trigger and scheduled tick, a job's time zone, enabled flag and
attempt budget, a task's rows and staged output."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from common.db.types import JSONDocument, UTCDateTime
from common.events import utcnow
from common.states import RunStatus, TaskStatus, TaskType, Trigger, WorkerStatus


def _enum(cls: type[Any], name: str) -> Enum:
    # Stored as plain strings: adding a status later is no ALTER TYPE on PostgreSQL.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """The model's table, typed as one (for Core statements over it)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class JobDefinition(Base):
    __tablename__ = "job_definitions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    schedule: Mapped[str | None] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    extractor_type: Mapped[str] = mapped_column(String(64))
    extractor_config: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    loader_type: Mapped[str] = mapped_column(String(64))
    loader_config: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    retry_backoff_seconds: Mapped[float] = mapped_column(Float, default=5.0)
    retry_backoff_factor: Mapped[float] = mapped_column(Float, default=2.0)
    retry_backoff_max_seconds: Mapped[float] = mapped_column(Float, default=3600.0)
    retry_jitter: Mapped[float] = mapped_column(Float, default=0.1)
    timeout_seconds: Mapped[float | None] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    runs: Mapped[list[JobRun]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True
    )


class JobRun(Base):
    __tablename__ = "job_runs"
    __table_args__ = (
        Index("ix_job_runs_job_scheduled", "job_definition_id", "scheduled_for"),
        Index("ix_job_runs_status", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    job_definition_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("job_definitions.id", ondelete="CASCADE")
    )
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "run_status"))
    trigger: Mapped[Trigger] = mapped_column(_enum(Trigger, "run_trigger"))
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error_message: Mapped[str | None] = mapped_column(Text)

    job: Mapped[JobDefinition] = relationship(back_populates="runs")
    tasks: Mapped[list[Task]] = relationship(
        back_populates="run", cascade="all, delete-orphan", passive_deletes=True
    )


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("job_run_id", "task_type", name="uq_tasks_run_type"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    job_run_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("job_runs.id", ondelete="CASCADE"), index=True
    )
    task_type: Mapped[TaskType] = mapped_column(_enum(TaskType, "task_type"))
    status: Mapped[TaskStatus] = mapped_column(_enum(TaskStatus, "task_status"))
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rows_processed: Mapped[int | None] = mapped_column(BigInteger)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)

    run: Mapped[JobRun] = relationship(back_populates="tasks")


class Worker(Base):
    """The worker registry: who consumes which queues, and when they were last heard of."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    queues: Mapped[list[str]] = mapped_column(JSONDocument)
    concurrency: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[WorkerStatus] = mapped_column(_enum(WorkerStatus, "worker_status"))


class ApiToken(Base):
    """A bearer token of the API, kept only as its SHA-256 digest."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class JobState(Base):
    """Values a job keeps between runs, such as an incremental extract's last cursor."""

    __tablename__ = "job_state"

    job_definition_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("job_definitions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONDocument)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class OutboxMessage(Base):
    """An event the coordinator committed to send: written in the same transaction as the
    state change that caused it, deleted once the broker confirmed it. Rows left behind by
    a crash are sent by the relay, so no committed transition loses its follow-up."""

    __tablename__ = "outbox"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    routing_key: Mapped[str] = mapped_column(String(200))
    delay_rung: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
