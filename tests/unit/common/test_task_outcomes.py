from __future__ import annotations

import uuid

import pytest

from common.errors import PoisonMessage
from common.events import (
    MAX_OUTCOMES,
    JobsDue,
    StateChanged,
    StateChanges,
    TaskFailed,
    TaskOutcomes,
    TaskSucceeded,
    unfolded,
)
from common.states import RunStatus
from scheduler.coordinator.router import ROUTES, parse


def succeeded() -> TaskSucceeded:
    return TaskSucceeded(task_id=uuid.uuid4(), run_id=uuid.uuid4(), attempt=1, rows=3)


def failed() -> TaskFailed:
    return TaskFailed(task_id=uuid.uuid4(), run_id=uuid.uuid4(), attempt=2, error="boom")


def test_outcomes_are_carried_as_they_were_made() -> None:
    outcomes: list[TaskSucceeded | TaskFailed] = [succeeded(), failed(), succeeded()]

    carried = TaskOutcomes.of(outcomes)

    assert sorted(o.task_id for o in carried.each()) == sorted(o.task_id for o in outcomes)
    assert set(carried.each()) == set(outcomes)


def test_the_coordinator_routes_each_outcome_to_its_own_handler() -> None:
    ok, bad = succeeded(), failed()
    body = TaskOutcomes.of([ok, bad]).model_dump_json().encode()

    parts = parse(TaskOutcomes.routing_key, body)

    assert [(event, route) for event, route in parts] == [
        (ok, ROUTES[TaskSucceeded.routing_key]),
        (bad, ROUTES[TaskFailed.routing_key]),
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"succeeded": [], "failed": []}',
        b'{"succeeded": [{"task_id": "not a uuid", "run_id": "x", "attempt": 1}]}',
        b'{"failed": [{"task_id": "1c7d3f2e-8d4e-4b8a-9a53-6f0d1f0e2c11",'
        b' "run_id": "1c7d3f2e-8d4e-4b8a-9a53-6f0d1f0e2c12", "attempt": 1}]}',
        b"not json",
    ],
    ids=["nothing", "empty", "bad-ids", "failure-without-error", "not-json"],
)
def test_a_malformed_task_outcomes_is_poison(body: bytes) -> None:
    with pytest.raises(PoisonMessage):
        parse(TaskOutcomes.routing_key, body)


def test_a_message_holds_at_most_the_limit() -> None:
    with pytest.raises(ValueError, match=f"1 to {MAX_OUTCOMES}"):
        TaskOutcomes(succeeded=tuple(succeeded() for _ in range(MAX_OUTCOMES + 1)))


def test_unfolded_gives_what_each_message_stands_for() -> None:
    outcomes: list[TaskSucceeded | TaskFailed] = [succeeded(), failed()]
    change = StateChanged(
        job_definition_id=uuid.uuid4(), run_id=uuid.uuid4(), run_status=RunStatus.RUNNING
    )
    jobs = JobsDue.model_validate(
        {"runs": [{"job_definition_id": str(uuid.uuid4()), "run_id": str(uuid.uuid4())}]}
    )
    alone = succeeded()

    assert set(unfolded(TaskOutcomes.of(outcomes))) == set(outcomes)
    assert unfolded(StateChanges(changes=(change,))) == (change,)
    assert [e.run_id for e in unfolded(jobs)] == [jobs.runs[0].run_id]  # type: ignore[attr-defined]
    assert unfolded(alone) == (alone,)
