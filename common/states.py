"""Statuses and the one table of allowed transitions: the state machine's facts."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    RETRYING = "RETRYING"
    CANCELLED = "CANCELLED"


class TaskType(StrEnum):
    EXTRACT = "EXTRACT"
    LOAD = "LOAD"

    @property
    def queue_suffix(self) -> str:
        return self.value.lower()


class WorkerStatus(StrEnum):
    ACTIVE = "ACTIVE"
    LOST = "LOST"
    STOPPED = "STOPPED"


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    EVENT = "event"


_RUN_ENDS = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: _RUN_ENDS | {RunStatus.RUNNING},
    RunStatus.RUNNING: _RUN_ENDS,
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

_TASK_ENDS = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    # A worker may report the outcome of an attempt whose TaskStarted was lost, and an
    # attempt may fail before it starts (a lost worker, a poison message): hence the
    # shortcuts from PENDING and RETRYING.
    TaskStatus.PENDING: _TASK_ENDS | {TaskStatus.RUNNING, TaskStatus.RETRYING},
    TaskStatus.RUNNING: _TASK_ENDS | {TaskStatus.RETRYING},
    TaskStatus.RETRYING: _TASK_ENDS | {TaskStatus.RUNNING},
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}

FINAL_RUN_STATUSES = frozenset(s for s, nxt in RUN_TRANSITIONS.items() if not nxt)
FINAL_TASK_STATUSES = frozenset(s for s, nxt in TASK_TRANSITIONS.items() if not nxt)


def can_move_run(current: RunStatus, new: RunStatus) -> bool:
    return new in RUN_TRANSITIONS[current]


def can_move_task(current: TaskStatus, new: TaskStatus) -> bool:
    return new in TASK_TRANSITIONS[current]
