"""A small run's load rides in its extract's dispatch: the worker that ran the extract runs
the load at once and reports both in one message, and the store still records every
transition of both tasks. A result too large to ride inline, or the setting off, sends
the load on its own."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.bus import connect_bus
from common.events import JobDue, RunFinished, StateChanged, TaskSucceeded
from common.settings import Settings
from common.states import RunStatus, TaskStatus, TaskType
from common.topology import task_routing_key
from tests.harness import engine_running, generate_job, publish, read_run, tap


@contextlib.asynccontextmanager
async def task_messages(settings: Settings) -> AsyncIterator[list[dict[str, Any]]]:
    """The bodies of every task message (both queues' routing keys) while inside."""
    bodies: list[dict[str, Any]] = []
    bus = await connect_bus(settings.broker_url, settings.namespace)
    try:
        queue = await bus.declare_private_queue([task_routing_key(t) for t in TaskType])

        async def keep(message: Any) -> None:
            bodies.append(json.loads(message.body))

        await queue.consume(keep, no_ack=True)
        yield bodies
    finally:
        await bus.close()


async def one_run(settings: Settings, rows: int) -> tuple[uuid.UUID, list[Any], list[Any]]:
    """Runs a `generate` → `null` job once; its id, task messages and tapped events."""
    job = await generate_job(settings, "small", rows=rows)
    run_id = uuid.uuid4()
    keys = ("task.succeeded", "state.changes", "run.finished")
    async with (
        task_messages(settings) as dispatched,
        tap(settings, *keys) as t,
        engine_running(settings),
    ):
        await publish(settings, JobDue(job_definition_id=job.id, run_id=run_id))
        events: list[Any] = []
        while not (events and isinstance(events[-1], RunFinished)):
            events.append(await t.next(object))  # type: ignore[type-var]
    return run_id, dispatched, events


async def test_a_small_run_is_extracted_and_loaded_in_one_worker_step(
    settings: Settings,
) -> None:
    run_id, dispatched, events = await one_run(settings, rows=3)

    # One task message: the extract, carrying its load.
    assert [(d["task_type"], (d["then"] or {}).get("plugin")) for d in dispatched] == [
        ("EXTRACT", "null")
    ]
    [outcome] = [e for e in events if isinstance(e, TaskSucceeded)]
    assert outcome.rows == 3 and outcome.load is not None
    assert (outcome.load.rows, outcome.load.error) == (3, None)

    run, tasks = await read_run(settings, run_id)
    assert run is not None and run.status is RunStatus.COMPLETED
    assert [(t.task_type, t.status, t.attempt_count, t.rows_processed) for t in tasks] == [
        (TaskType.EXTRACT, TaskStatus.COMPLETED, 1, 3),
        (TaskType.LOAD, TaskStatus.COMPLETED, 1, 3),
    ]
    loaded = tasks[1]
    # The same worker ran both.
    assert loaded.worker_id == tasks[0].worker_id == outcome.load.worker_id
    assert loaded.started_at is not None and loaded.completed_at is not None
    # The load's transitions are announced as if it had been dispatched on its own.
    seen = [
        e.task_status
        for e in events
        if isinstance(e, StateChanged) and e.task_type is TaskType.LOAD
    ]
    assert seen == [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.COMPLETED]


@pytest.mark.parametrize(
    "update",
    [{"load_after_extract": False}, {"staging_inline_bytes": 0}],
    ids=["setting-off", "result-not-inline"],
)
async def test_otherwise_the_load_is_dispatched_on_its_own(
    settings: Settings, update: dict[str, Any]
) -> None:
    settings = settings.model_copy(update=update)
    run_id, dispatched, events = await one_run(settings, rows=3)

    assert sorted(d["task_type"] for d in dispatched) == ["EXTRACT", "LOAD"]
    outcomes = [e for e in events if isinstance(e, TaskSucceeded)]
    assert len(outcomes) == 2 and all(o.load is None for o in outcomes)
    run, tasks = await read_run(settings, run_id)
    assert run is not None and run.status is RunStatus.COMPLETED
    assert [(t.status, t.attempt_count) for t in tasks] == [(TaskStatus.COMPLETED, 1)] * 2
