from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from common.errors import PoisonMessage
from common.events import MAX_JOBS_DUE, DueRun, JobDue, JobsDue
from common.states import Trigger
from scheduler.coordinator.router import parse

TICK = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def due(n: int) -> tuple[DueRun, ...]:
    return tuple(
        DueRun(job_definition_id=uuid.uuid4(), run_id=uuid.uuid4(), scheduled_for=TICK)
        for _ in range(n)
    )


def test_each_run_becomes_the_job_due_that_would_start_it() -> None:
    runs = due(3)
    event = JobsDue(runs=runs)

    each = event.each()

    assert [(e.job_definition_id, e.run_id, e.scheduled_for) for e in each] == [
        (r.job_definition_id, r.run_id, TICK) for r in runs
    ]
    assert {e.trigger for e in each} == {Trigger.SCHEDULE}
    assert len({e.event_id for e in each}) == 3


def test_the_coordinator_routes_a_jobs_due_as_its_job_dues() -> None:
    event = JobsDue(runs=due(2), trigger=Trigger.MANUAL)

    parts = parse(JobsDue.routing_key, event.model_dump_json().encode())

    events = [e for e, _ in parts if isinstance(e, JobDue)]
    assert len(events) == 2
    assert [e.run_id for e in events] == [r.run_id for r in event.runs]
    assert {e.trigger for e in events} == {Trigger.MANUAL}
    assert {route.model for _, route in parts} == {JobDue}


@pytest.mark.parametrize(
    "body",
    [
        b'{"runs": []}',
        b'{"runs": [{"job_definition_id": "not a uuid", "run_id": "also not"}]}',
        # a run id is required: the message's id could not tell the runs apart
        b'{"runs": [{"job_definition_id": "1c7d3f2e-8d4e-4b8a-9a53-6f0d1f0e2c11"}]}',
        b"not json",
    ],
    ids=["empty", "bad-ids", "no-run-id", "not-json"],
)
def test_a_malformed_jobs_due_is_poison(body: bytes) -> None:
    with pytest.raises(PoisonMessage):
        parse(JobsDue.routing_key, body)


def test_a_message_holds_at_most_the_limit() -> None:
    with pytest.raises(ValueError, match="at most"):
        JobsDue(runs=due(MAX_JOBS_DUE + 1))
