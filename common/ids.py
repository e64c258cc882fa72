"""Deterministic ids: the same trigger or task always gets the same id, which is what
makes duplicates (a restarted scheduler, a redelivered event) harmless."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from common.states import TaskType

_ORC = uuid.UUID("5d1f3a9e-7c2b-4e51-9a0f-0c6e2b8d4a17")


def scheduled_run_id(job_definition_id: uuid.UUID, tick: datetime) -> uuid.UUID:
    """The run of one scheduled tick of one job."""
    stamp = tick.astimezone(UTC).isoformat()
    return uuid.uuid5(_ORC, f"schedule:{job_definition_id}:{stamp}")


def run_id_from_message(job_definition_id: uuid.UUID, message_key: str) -> uuid.UUID:
    """The run of an outside `JobDue` that named no run id: keyed by its message id."""
    return uuid.uuid5(_ORC, f"event:{job_definition_id}:{message_key}")


def task_id(run_id: uuid.UUID, task_type: TaskType) -> uuid.UUID:
    return uuid.uuid5(run_id, task_type.value)
