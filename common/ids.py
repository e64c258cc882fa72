"""Ids. Deterministic ones: the same trigger or task always gets the same id, which is
what makes duplicates (a restarted scheduler, a redelivered event) harmless. Fresh ones:
`new_id()`."""

from __future__ import annotations

import functools
import random
import uuid
from datetime import UTC, datetime

from common.states import TaskType


def new_id() -> uuid.UUID:
    """A fresh random (version 4) UUID, for events and runs that name none.

    Not `uuid.uuid4()`: its `os.urandom` lets go of the GIL, and taking it back waits out
    the other busy thread's switch interval: 0.4 ms instead of 2 µs a call beside a busy
    thread (the coordinator's store thread and its event loop, a worker's attempt thread).
    These ids need to be unique, not secret; the module's generator is seeded from
    `os.urandom` and reseeded in forked children.
    """
    return uuid.UUID(int=random.getrandbits(128), version=4)


_ORC = uuid.UUID("5d1f3a9e-7c2b-4e51-9a0f-0c6e2b8d4a17")


def scheduled_run_id(job_definition_id: uuid.UUID, tick: datetime) -> uuid.UUID:
    """The run of one scheduled tick of one job."""
    stamp = tick.astimezone(UTC).isoformat()
    return uuid.uuid5(_ORC, f"schedule:{job_definition_id}:{stamp}")


def run_id_from_message(job_definition_id: uuid.UUID, message_key: str) -> uuid.UUID:
    """The run of an outside `JobDue` that named no run id: keyed by its message id."""
    return uuid.uuid5(_ORC, f"event:{job_definition_id}:{message_key}")


@functools.lru_cache(maxsize=1 << 14)
def task_id(run_id: uuid.UUID, task_type: TaskType) -> uuid.UUID:
    # Asked for several times per run by the coordinator (each an SHA-1 and a UUID):
    # the cache holds the runs in flight.
    return uuid.uuid5(run_id, task_type.value)
