"""The lazy start report: a short attempt reports its start with its outcome, a long one
sends `TaskStarted` while it runs. Either way the store and the live notices show every
transition (PENDING → RUNNING → COMPLETED)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from common.events import (
    JobDue,
    RunFinished,
    StateChanged,
    TaskStarted,
    TaskSucceeded,
)
from common.settings import Settings
from common.states import RunStatus, TaskStatus, TaskType
from plugins.registry import clear_registrations
from tests.harness import Tap, engine_running, generate_job, insert_job, publish, read_run, tap
from tests.test_plugins import register


@pytest.fixture(autouse=True)
def sleepy_plugin() -> Iterator[None]:
    register()
    yield
    clear_registrations()


async def _drain(t: Tap) -> list[object]:
    events: list[object] = []
    while not t.received.empty():
        events.append(t.received.get_nowait())
    return events


async def test_a_short_attempt_reports_its_start_with_its_outcome(
    sqlite_settings: Settings,
) -> None:
    # Each task in its own message (a load run right after its extract reports its start
    # in the extract's message: tests/integration/engine/test_load_after_extract.py).
    settings = sqlite_settings.model_copy(
        update={"start_report_seconds": 5.0, "load_after_extract": False}
    )
    job = await generate_job(settings, "short", rows=3)
    run_id = uuid.uuid4()
    keys = ("task.started", "task.succeeded", "state.changes", "run.finished")
    async with tap(settings, *keys) as t, engine_running(settings):
        await publish(settings, JobDue(job_definition_id=job.id, run_id=run_id))
        before: list[object] = []
        while True:
            event = await t.next(object)  # type: ignore[type-var]
            before.append(event)
            if isinstance(event, RunFinished) and event.run_id == run_id:
                break
    events = before + await _drain(t)
    assert not [e for e in events if isinstance(e, TaskStarted)]
    outcomes = [e for e in events if isinstance(e, TaskSucceeded)]
    assert len(outcomes) == 2
    assert all(o.started_at is not None and o.worker_id for o in outcomes)

    run, tasks = await read_run(settings, run_id)
    assert run is not None and run.status is RunStatus.COMPLETED
    for task, outcome in zip(tasks, outcomes, strict=True):
        assert task.worker_id == outcome.worker_id
        assert task.started_at is not None and task.completed_at is not None
        assert task.started_at <= task.completed_at

    # Every transition is still announced, in order, for each task.
    for kind in TaskType:
        seen = [
            e.task_status
            for e in events
            if isinstance(e, StateChanged) and e.task_type is kind and e.run_id == run_id
        ]
        assert seen == [TaskStatus.PENDING, TaskStatus.RUNNING, TaskStatus.COMPLETED], kind
    run_states = [
        e.run_status
        for e in events
        if isinstance(e, StateChanged) and e.task_id is None and e.run_id == run_id
    ]
    assert run_states == [RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPLETED]


async def test_a_long_attempt_reports_its_start_while_it_runs(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(update={"start_report_seconds": 0.1})
    job = await insert_job(
        settings,
        name="long",
        extractor_type="sleepy",
        extractor_config={"seconds": 1.0},
        loader_type="null",
        loader_config={},
        max_attempts=1,
    )
    run_id = uuid.uuid4()
    keys = ("task.started", "task.succeeded", "state.changes")
    async with tap(settings, *keys) as t, engine_running(settings):
        await publish(settings, JobDue(job_definition_id=job.id, run_id=run_id))
        started = await t.next(TaskStarted, run_id=run_id)
        # The start arrives while the attempt runs: the task shows RUNNING in the store.
        await t.next(StateChanged, run_id=run_id, task_status=TaskStatus.RUNNING)
        _, tasks = await read_run(settings, run_id)
        assert tasks[0].status is TaskStatus.RUNNING
        assert tasks[0].worker_id == started.worker_id
        succeeded = await t.next(TaskSucceeded, run_id=run_id, task_id=started.task_id)
    assert succeeded.started_at is None  # reported already
