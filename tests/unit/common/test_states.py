"""The state machine's tables: which status may follow which, and which are final."""

from __future__ import annotations

import itertools

import pytest

from common.states import (
    FINAL_RUN_STATUSES,
    FINAL_TASK_STATUSES,
    RUN_TRANSITIONS,
    TASK_TRANSITIONS,
    RunStatus,
    TaskStatus,
    can_move_run,
    can_move_task,
)

R = RunStatus
T = TaskStatus

ALLOWED_RUN = {
    (R.PENDING, R.RUNNING),
    (R.PENDING, R.COMPLETED),
    (R.PENDING, R.FAILED),
    (R.PENDING, R.CANCELLED),
    (R.RUNNING, R.COMPLETED),
    (R.RUNNING, R.FAILED),
    (R.RUNNING, R.CANCELLED),
}

ALLOWED_TASK = {
    (T.PENDING, T.RUNNING),
    # An outcome may arrive for an attempt whose TaskStarted was lost, and an attempt may
    # fail before it starts (a lost worker, a poison message).
    (T.PENDING, T.COMPLETED),
    (T.PENDING, T.FAILED),
    (T.PENDING, T.RETRYING),
    (T.PENDING, T.CANCELLED),
    (T.RUNNING, T.COMPLETED),
    (T.RUNNING, T.FAILED),
    (T.RUNNING, T.RETRYING),
    (T.RUNNING, T.CANCELLED),
    (T.RETRYING, T.RUNNING),
    (T.RETRYING, T.COMPLETED),
    (T.RETRYING, T.FAILED),
    (T.RETRYING, T.CANCELLED),
}


def test_every_status_has_a_row() -> None:
    assert set(RUN_TRANSITIONS) == set(RunStatus)
    assert set(TASK_TRANSITIONS) == set(TaskStatus)
    for targets in RUN_TRANSITIONS.values():
        assert targets <= set(RunStatus)
    for task_targets in TASK_TRANSITIONS.values():
        assert task_targets <= set(TaskStatus)


def test_final_sets() -> None:
    assert frozenset({R.COMPLETED, R.FAILED, R.CANCELLED}) == FINAL_RUN_STATUSES
    assert frozenset({T.COMPLETED, T.FAILED, T.CANCELLED}) == FINAL_TASK_STATUSES


@pytest.mark.parametrize("status", sorted(FINAL_RUN_STATUSES))
def test_final_run_statuses_have_no_exit(status: RunStatus) -> None:
    assert RUN_TRANSITIONS[status] == frozenset()
    assert not any(can_move_run(status, other) for other in RunStatus)


@pytest.mark.parametrize("status", sorted(FINAL_TASK_STATUSES))
def test_final_task_statuses_have_no_exit(status: TaskStatus) -> None:
    assert TASK_TRANSITIONS[status] == frozenset()
    assert not any(can_move_task(status, other) for other in TaskStatus)


def test_non_final_statuses_have_an_exit() -> None:
    for run_status in set(RunStatus) - FINAL_RUN_STATUSES:
        assert RUN_TRANSITIONS[run_status], run_status
    for task_status in set(TaskStatus) - FINAL_TASK_STATUSES:
        assert TASK_TRANSITIONS[task_status], task_status


@pytest.mark.parametrize(("current", "new"), list(itertools.product(RunStatus, RunStatus)))
def test_run_transitions(current: RunStatus, new: RunStatus) -> None:
    assert can_move_run(current, new) is ((current, new) in ALLOWED_RUN)


@pytest.mark.parametrize(("current", "new"), list(itertools.product(TaskStatus, TaskStatus)))
def test_task_transitions(current: TaskStatus, new: TaskStatus) -> None:
    assert can_move_task(current, new) is ((current, new) in ALLOWED_TASK)


def test_no_status_moves_to_itself() -> None:
    # A duplicate event must change nothing: staying put is never a "transition".
    assert not any(can_move_run(s, s) for s in RunStatus)
    assert not any(can_move_task(s, s) for s in TaskStatus)


def test_nothing_returns_to_pending() -> None:
    assert not any(can_move_run(s, R.PENDING) for s in RunStatus)
    assert not any(can_move_task(s, T.PENDING) for s in TaskStatus)


def test_every_non_final_status_can_reach_a_final_one() -> None:
    def reachable(start: TaskStatus) -> set[TaskStatus]:
        seen, todo = {start}, [start]
        while todo:
            for nxt in TASK_TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    for status in TaskStatus:
        assert reachable(status) & FINAL_TASK_STATUSES, status
    for run_status in RunStatus:
        assert run_status in FINAL_RUN_STATUSES or RUN_TRANSITIONS[run_status] & (
            FINAL_RUN_STATUSES
        )


def test_status_values_are_their_names() -> None:
    # Stored as plain strings in the database and sent as such on the bus.
    assert all(s.value == s.name for s in RunStatus)
    assert all(s.value == s.name for s in TaskStatus)
