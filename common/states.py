"""Statuses and the one table of allowed transitions: the state machine's facts."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    RETRYING = "RETRYING"


class TaskType(StrEnum):
    EXTRACT = "EXTRACT"
    LOAD = "LOAD"

    @property
    def queue_suffix(self) -> str:
        return self.value.lower()


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    EVENT = "event"


RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset({RunStatus.COMPLETED, RunStatus.FAILED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
}

TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED}),
    # A worker may report success or failure of an attempt whose TaskStarted was lost.
    TaskStatus.RUNNING: frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.RETRYING}),
    TaskStatus.RETRYING: frozenset({TaskStatus.RUNNING, TaskStatus.COMPLETED, TaskStatus.FAILED}),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
}

FINAL_RUN_STATUSES = frozenset(s for s, nxt in RUN_TRANSITIONS.items() if not nxt)
FINAL_TASK_STATUSES = frozenset(s for s, nxt in TASK_TRANSITIONS.items() if not nxt)


def can_move_run(current: RunStatus, new: RunStatus) -> bool:
    return new in RUN_TRANSITIONS[current]


def can_move_task(current: TaskStatus, new: TaskStatus) -> bool:
    return new in TASK_TRANSITIONS[current]
