"""The coordinator's handlers as plain functions over a real SQLite session: no broker.

Each handler call runs in its own transaction, as the coordinator runs it, and returns the
messages it writes to the outbox (published once that transaction commits).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.bus import Outgoing
from common.db.engine import make_engine, make_sessionmaker
from common.db.models import JobDefinition, JobRun, Task
from common.errors import PoisonMessage
from common.events import (
    Event,
    JobDue,
    LoadResult,
    RunFinished,
    StagedData,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from common.ids import run_id_from_message, task_id
from common.states import RunStatus, TaskStatus, TaskType, Trigger
from common.topology import task_routing_key
from scheduler.coordinator import handlers
from scheduler.coordinator.uow import UnitOfWork

Sessions = async_sessionmaker[AsyncSession]
Outbox = list[Outgoing]

EXTRACT_CONFIG = {"path": "in/people.csv"}
LOAD_CONFIG = {"database": "out/wh.duckdb", "table": "people"}
STAGED = StagedData(
    uri="file:///staging/run/extract",
    files=("part-0.parquet",),
    rows=42,
    columns={"id": "int64", "name": "string"},
)


@pytest.fixture
async def sessions(sqlite_url: str) -> AsyncIterator[Sessions]:
    engine = make_engine(sqlite_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def add_job(sessions: Sessions, max_attempts: int) -> JobDefinition:
    async with sessions() as session, session.begin():
        job = JobDefinition(
            name=f"people-{max_attempts}",
            extractor_type="csv",
            extractor_config=EXTRACT_CONFIG,
            loader_type="duckdb",
            loader_config=LOAD_CONFIG,
            max_attempts=max_attempts,
        )
        session.add(job)
    return job


@pytest.fixture
async def job(sessions: Sessions) -> JobDefinition:
    """One attempt, so a failure is final whatever the retry policy."""
    return await add_job(sessions, max_attempts=1)


async def handle(
    sessions: Sessions,
    handler: Callable[..., None],
    event: Event,
    *args: Any,
    load_after_extract: bool = False,
) -> Outbox:
    """Run one handler in one committed transaction; return what it would publish."""

    def work(conn: Connection) -> UnitOfWork:
        uow = UnitOfWork(conn, load_after_extract=load_after_extract)
        handler(event, uow, *args)
        uow.flush()
        return uow

    async with sessions() as session, session.begin():
        conn = await session.connection()
        uow = await conn.run_sync(work)
    return uow.outbox


async def job_due(sessions: Sessions, event: JobDue, message_id: str | None = None) -> Outbox:
    return await handle(sessions, handlers.on_job_due, event, message_id)


async def load(sessions: Sessions, run_id: uuid.UUID) -> tuple[JobRun | None, dict[TaskType, Task]]:
    async with sessions() as session:
        run = await session.get(JobRun, run_id)
        tasks = (await session.execute(select(Task).where(Task.job_run_id == run_id))).scalars()
        return run, {t.task_type: t for t in tasks}


async def count(sessions: Sessions, model: type[JobRun] | type[Task]) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


def dispatches(outbox: Outbox) -> list[tuple[TaskDispatched, str | None, int | None]]:
    """The TaskDispatched in an outbox, with their routing key and delay rung."""
    return [
        (o.event, o.routing_key, o.delay_rung)
        for o in outbox
        if isinstance(o.event, TaskDispatched)
    ]


def finishes(outbox: Outbox) -> list[RunFinished]:
    return [o.event for o in outbox if isinstance(o.event, RunFinished)]


def snapshot(run: JobRun | None, tasks: dict[TaskType, Task]) -> Any:
    assert run is not None
    return (
        (run.status, run.started_at, run.completed_at, run.error_message),
        {
            kind: (t.status, t.attempt_count, t.worker_id, t.started_at, t.completed_at)
            for kind, t in tasks.items()
        },
    )


async def start_run(sessions: Sessions, job: JobDefinition) -> uuid.UUID:
    run_id = uuid.uuid4()
    await job_due(sessions, JobDue(job_definition_id=job.id, run_id=run_id))
    return run_id


def started(run_id: uuid.UUID, kind: TaskType, attempt: int = 1) -> TaskStarted:
    return TaskStarted(
        task_id=task_id(run_id, kind), run_id=run_id, attempt=attempt, worker_id="w-1"
    )


def succeeded(run_id: uuid.UUID, kind: TaskType, staged: StagedData | None = None) -> TaskSucceeded:
    return TaskSucceeded(
        task_id=task_id(run_id, kind), run_id=run_id, attempt=1, rows=42, staged=staged
    )


async def extract_done(sessions: Sessions, run_id: uuid.UUID) -> None:
    await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT))
    await handle(sessions, handlers.on_task_succeeded, succeeded(run_id, TaskType.EXTRACT, STAGED))


class TestJobDue:
    async def test_creates_pending_run_and_extract_and_dispatches_attempt_one(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = uuid.uuid4()
        tick = datetime(2025, 6, 1, 12, 0, 2, tzinfo=UTC)
        outbox = await job_due(
            sessions,
            JobDue(
                job_definition_id=job.id,
                run_id=run_id,
                trigger=Trigger.SCHEDULE,
                scheduled_for=tick,
            ),
        )

        run, tasks = await load(sessions, run_id)
        assert run is not None
        assert run.status is RunStatus.PENDING
        assert run.job_definition_id == job.id
        assert run.trigger is Trigger.SCHEDULE
        assert run.scheduled_for == tick
        assert run.started_at is None and run.completed_at is None
        assert list(tasks) == [TaskType.EXTRACT]
        extract = tasks[TaskType.EXTRACT]
        assert extract.id == task_id(run_id, TaskType.EXTRACT)
        assert extract.status is TaskStatus.PENDING
        # The task counts the attempt it dispatched.
        assert extract.attempt_count == 1
        assert extract.max_attempts == 1

        sent = dispatches(outbox)
        assert len(sent) == 1
        dispatched, key, rung = sent[0]
        assert key == task_routing_key(TaskType.EXTRACT)
        assert rung is None
        assert dispatched.task_id == extract.id
        assert dispatched.run_id == run_id
        assert dispatched.job_definition_id == job.id
        assert dispatched.task_type is TaskType.EXTRACT
        assert dispatched.attempt == 1
        assert (dispatched.plugin, dispatched.config) == ("csv", EXTRACT_CONFIG)
        assert dispatched.staged is None
        assert finishes(outbox) == []

    async def test_same_job_due_twice_makes_one_run_and_emits_nothing_more(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = uuid.uuid4()
        event = JobDue(job_definition_id=job.id, run_id=run_id)
        first = await job_due(sessions, event)
        before = snapshot(*await load(sessions, run_id))

        second = await job_due(sessions, event)

        assert len(dispatches(first)) == 1
        assert await count(sessions, JobRun) == 1
        assert await count(sessions, Task) == 1
        assert snapshot(*await load(sessions, run_id)) == before
        # The first dispatch went to the outbox with the run, in one transaction: it cannot
        # have been lost, so a duplicate sends nothing (a second dispatch would run the
        # extract twice).
        assert second == []

    async def test_job_due_after_the_extract_started_changes_nothing(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)
        await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT))
        before = snapshot(*await load(sessions, run_id))

        outbox = await job_due(sessions, JobDue(job_definition_id=job.id, run_id=run_id))

        assert outbox == []
        assert snapshot(*await load(sessions, run_id)) == before
        assert await count(sessions, JobRun) == 1

    async def test_unknown_job_is_a_poison_message(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        unknown = uuid.uuid4()
        with pytest.raises(PoisonMessage, match=str(unknown)):
            await job_due(sessions, JobDue(job_definition_id=unknown, run_id=uuid.uuid4()))
        assert await count(sessions, JobRun) == 0
        assert await count(sessions, Task) == 0


class TestTaskStarted:
    async def test_moves_task_and_run_to_running(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)

        outbox = await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT))

        run, tasks = await load(sessions, run_id)
        assert run is not None
        assert run.status is RunStatus.RUNNING
        assert run.started_at is not None
        extract = tasks[TaskType.EXTRACT]
        assert extract.status is TaskStatus.RUNNING
        assert extract.attempt_count == 1
        assert extract.worker_id == "w-1"
        assert extract.started_at is not None
        assert dispatches(outbox) == []
        assert finishes(outbox) == []

    async def test_duplicate_started_changes_nothing(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)
        await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT))
        before = snapshot(*await load(sessions, run_id))

        outbox = await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT))

        assert snapshot(*await load(sessions, run_id)) == before
        assert outbox == []

    async def test_started_of_another_attempt_changes_nothing(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)
        before = snapshot(*await load(sessions, run_id))

        # Attempt 1 is the one dispatched: 0 is no attempt, 2 was never sent.
        for attempt in (0, 2):
            outbox = await handle(
                sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT, attempt)
            )
            assert outbox == []

        assert snapshot(*await load(sessions, run_id)) == before
        assert before[1][TaskType.EXTRACT][0] is TaskStatus.PENDING

    async def test_redelivered_started_hands_the_task_to_the_new_worker(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)
        await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT))
        _, before = await load(sessions, run_id)

        await handle(
            sessions,
            handlers.on_task_started,
            TaskStarted(
                task_id=task_id(run_id, TaskType.EXTRACT),
                run_id=run_id,
                attempt=1,
                worker_id="w-2",
            ),
        )

        _, after = await load(sessions, run_id)
        extract, was = after[TaskType.EXTRACT], before[TaskType.EXTRACT]
        assert extract.worker_id == "w-2"
        assert (extract.status, extract.attempt_count, extract.started_at) == (
            was.status,
            was.attempt_count,
            was.started_at,
        )

    async def test_stale_started_after_success_changes_nothing(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)
        await extract_done(sessions, run_id)
        before = snapshot(*await load(sessions, run_id))

        await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT))
        await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT, 2))

        after = snapshot(*await load(sessions, run_id))
        assert after == before
        assert after[1][TaskType.EXTRACT][0] is TaskStatus.COMPLETED


class TestTaskSucceeded:
    async def test_extract_success_creates_and_dispatches_the_load(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)
        await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT))

        outbox = await handle(
            sessions, handlers.on_task_succeeded, succeeded(run_id, TaskType.EXTRACT, STAGED)
        )

        run, tasks = await load(sessions, run_id)
        assert run is not None and run.status is RunStatus.RUNNING
        extract = tasks[TaskType.EXTRACT]
        assert extract.status is TaskStatus.COMPLETED
        assert extract.completed_at is not None
        assert extract.rows_processed == 42
        assert extract.output is not None
        assert StagedData.model_validate(extract.output["staged"]) == STAGED
        load_task = tasks[TaskType.LOAD]
        assert load_task.id == task_id(run_id, TaskType.LOAD)
        assert load_task.status is TaskStatus.PENDING
        assert load_task.attempt_count == 1

        sent = dispatches(outbox)
        assert len(sent) == 1
        dispatched, key, rung = sent[0]
        assert key == task_routing_key(TaskType.LOAD)
        assert rung is None
        assert dispatched.task_id == load_task.id
        assert dispatched.task_type is TaskType.LOAD
        assert dispatched.attempt == 1
        assert (dispatched.plugin, dispatched.config) == ("duckdb", LOAD_CONFIG)
        assert dispatched.staged == STAGED
        assert finishes(outbox) == []

    async def test_duplicate_extract_success_makes_no_second_load(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)
        await extract_done(sessions, run_id)
        before = snapshot(*await load(sessions, run_id))

        outbox = await handle(
            sessions, handlers.on_task_succeeded, succeeded(run_id, TaskType.EXTRACT, STAGED)
        )

        assert snapshot(*await load(sessions, run_id)) == before
        assert await count(sessions, Task) == 2
        assert outbox == []

    async def test_load_success_completes_the_run(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)
        await extract_done(sessions, run_id)
        await handle(sessions, handlers.on_task_started, started(run_id, TaskType.LOAD))

        outbox = await handle(
            sessions, handlers.on_task_succeeded, succeeded(run_id, TaskType.LOAD)
        )

        run, tasks = await load(sessions, run_id)
        assert run is not None
        assert run.status is RunStatus.COMPLETED
        assert run.completed_at is not None
        assert run.error_message is None
        assert {k: t.status for k, t in tasks.items()} == {
            TaskType.EXTRACT: TaskStatus.COMPLETED,
            TaskType.LOAD: TaskStatus.COMPLETED,
        }
        finished = finishes(outbox)
        assert len(finished) == 1
        event = finished[0]
        assert (event.run_id, event.job_definition_id, event.status) == (
            run_id,
            job.id,
            RunStatus.COMPLETED,
        )
        assert event.error_message is None
        assert dispatches(outbox) == []

    async def test_duplicate_load_success_keeps_the_run_completed(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)
        await extract_done(sessions, run_id)
        await handle(sessions, handlers.on_task_succeeded, succeeded(run_id, TaskType.LOAD))
        before = snapshot(*await load(sessions, run_id))

        outbox = await handle(
            sessions, handlers.on_task_succeeded, succeeded(run_id, TaskType.LOAD)
        )

        assert snapshot(*await load(sessions, run_id)) == before
        assert outbox == []


class TestTaskFailed:
    async def test_failure_marks_task_and_run_failed(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = await start_run(sessions, job)
        await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT))

        outbox = await handle(
            sessions,
            handlers.on_task_failed,
            TaskFailed(
                task_id=task_id(run_id, TaskType.EXTRACT),
                run_id=run_id,
                attempt=1,
                error="file not found: in/people.csv",
                retryable=False,
            ),
        )

        run, tasks = await load(sessions, run_id)
        extract = tasks[TaskType.EXTRACT]
        assert extract.status is TaskStatus.FAILED
        assert extract.error_message == "file not found: in/people.csv"
        assert extract.completed_at is not None
        assert run is not None
        assert run.status is RunStatus.FAILED
        assert run.completed_at is not None
        assert run.error_message is not None
        assert "file not found: in/people.csv" in run.error_message
        assert TaskType.LOAD not in tasks
        finished = finishes(outbox)
        assert len(finished) == 1
        assert finished[0].status is RunStatus.FAILED
        assert finished[0].error_message == run.error_message
        assert dispatches(outbox) == []

    async def test_retryable_failure_with_attempts_left_is_retried_later(
        self, sessions: Sessions
    ) -> None:
        job = await add_job(sessions, max_attempts=3)
        run_id = await start_run(sessions, job)
        await handle(sessions, handlers.on_task_started, started(run_id, TaskType.EXTRACT))

        outbox = await handle(
            sessions,
            handlers.on_task_failed,
            TaskFailed(
                task_id=task_id(run_id, TaskType.EXTRACT),
                run_id=run_id,
                attempt=1,
                error="connection reset",
                retryable=True,
            ),
        )

        run, tasks = await load(sessions, run_id)
        assert run is not None and run.status is RunStatus.RUNNING
        extract = tasks[TaskType.EXTRACT]
        assert extract.status is TaskStatus.RETRYING
        assert extract.attempt_count == 2
        assert extract.error_message == "connection reset"
        sent = dispatches(outbox)
        assert len(sent) == 1
        dispatched, key, rung = sent[0]
        assert (dispatched.task_id, dispatched.attempt, key) == (extract.id, 2, "task.extract")
        assert rung is not None and rung > 0
        assert finishes(outbox) == []

        # The failed attempt's outcome arriving again is stale now.
        stale = await handle(
            sessions,
            handlers.on_task_failed,
            TaskFailed(task_id=extract.id, run_id=run_id, attempt=1, error="again", retryable=True),
        )
        assert stale == []

    async def test_permanent_failure_is_not_retried(self, sessions: Sessions) -> None:
        job = await add_job(sessions, max_attempts=3)
        run_id = await start_run(sessions, job)

        outbox = await handle(
            sessions,
            handlers.on_task_failed,
            TaskFailed(
                task_id=task_id(run_id, TaskType.EXTRACT),
                run_id=run_id,
                attempt=1,
                error="bad config",
                retryable=False,
            ),
        )

        run, tasks = await load(sessions, run_id)
        assert run is not None and run.status is RunStatus.FAILED
        assert tasks[TaskType.EXTRACT].status is TaskStatus.FAILED
        assert dispatches(outbox) == []
        assert [f.status for f in finishes(outbox)] == [RunStatus.FAILED]


class TestUnknownRunOrTask:
    @pytest.mark.parametrize(
        ("handler", "make"),
        [
            (
                handlers.on_task_started,
                lambda r, t: TaskStarted(task_id=t, run_id=r, attempt=1, worker_id="w"),
            ),
            (
                handlers.on_task_succeeded,
                lambda r, t: TaskSucceeded(task_id=t, run_id=r, attempt=1, staged=STAGED),
            ),
            (
                handlers.on_task_failed,
                lambda r, t: TaskFailed(task_id=t, run_id=r, attempt=1, error="boom"),
            ),
        ],
        ids=["started", "succeeded", "failed"],
    )
    async def test_events_for_unknown_run_or_task_are_dropped(
        self,
        sessions: Sessions,
        job: JobDefinition,
        handler: Callable[..., None],
        make: Callable[[uuid.UUID, uuid.UUID], Event],
    ) -> None:
        run_id = await start_run(sessions, job)
        other_run = await start_run(sessions, job)
        before = snapshot(*await load(sessions, run_id))
        other_before = snapshot(*await load(sessions, other_run))

        unknown_run = await handle(sessions, handler, make(uuid.uuid4(), uuid.uuid4()))
        # A known run, but a task it does not have.
        unknown_task = await handle(sessions, handler, make(run_id, uuid.uuid4()))
        # A known run, and a known task, but of another run.
        mismatched = await handle(
            sessions, handler, make(run_id, task_id(other_run, TaskType.EXTRACT))
        )

        assert unknown_run == unknown_task == mismatched == []
        assert snapshot(*await load(sessions, run_id)) == before
        assert snapshot(*await load(sessions, other_run)) == other_before
        assert await count(sessions, JobRun) == 2
        assert await count(sessions, Task) == 2


class TestResolveRunId:
    def test_explicit_run_id_wins(self) -> None:
        run_id = uuid.uuid4()
        event = JobDue(job_definition_id=uuid.uuid4(), run_id=run_id, event_id=uuid.uuid4())
        assert handlers.resolve_run_id(event, "message-1") == run_id

    def test_outside_event_id_gives_the_same_run_id_each_time(self) -> None:
        job_id, event_id = uuid.uuid4(), uuid.uuid4()
        body = f'{{"job_definition_id": "{job_id}", "event_id": "{event_id}"}}'
        first = handlers.resolve_run_id(JobDue.model_validate_json(body), None)
        second = handlers.resolve_run_id(JobDue.model_validate_json(body), "another-message")
        assert first == second == run_id_from_message(job_id, str(event_id))

    def test_message_id_is_used_when_no_event_id_was_sent(self) -> None:
        job_id = uuid.uuid4()
        body = f'{{"job_definition_id": "{job_id}"}}'
        first = handlers.resolve_run_id(JobDue.model_validate_json(body), "message-1")
        second = handlers.resolve_run_id(JobDue.model_validate_json(body), "message-1")
        assert first == second == run_id_from_message(job_id, "message-1")

    def test_nothing_identifying_gives_a_new_run_each_time(self) -> None:
        body = f'{{"job_definition_id": "{uuid.uuid4()}"}}'
        first = handlers.resolve_run_id(JobDue.model_validate_json(body), None)
        second = handlers.resolve_run_id(JobDue.model_validate_json(body), None)
        assert first != second

    async def test_outside_job_due_with_event_id_twice_is_one_run(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        body = f'{{"job_definition_id": "{job.id}", "event_id": "{uuid.uuid4()}"}}'

        await job_due(sessions, JobDue.model_validate_json(body), None)
        await job_due(sessions, JobDue.model_validate_json(body), None)

        async with sessions() as session:
            runs = list((await session.execute(select(JobRun))).scalars())
        assert len(runs) == 1
        assert runs[0].trigger is Trigger.EVENT
        assert await count(sessions, Task) == 1


INLINE = StagedData(uri="file:///staging/run/extract", files=(), rows=1, inline="QUJD")
LOAD_STARTED = datetime(2025, 6, 1, 12, 0, 1, tzinfo=UTC)


class TestLoadAfterExtract:
    """An extract dispatched with its load; the worker reports both in one message."""

    async def fused(
        self, sessions: Sessions, job: JobDefinition, **result: Any
    ) -> tuple[uuid.UUID, Outbox]:
        run_id = uuid.uuid4()
        due = JobDue(job_definition_id=job.id, run_id=run_id)
        await handle(sessions, handlers.on_job_due, due, None, load_after_extract=True)
        extract = TaskSucceeded(
            task_id=task_id(run_id, TaskType.EXTRACT),
            run_id=run_id,
            attempt=1,
            rows=1,
            staged=INLINE,
            started_at=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
            worker_id="w-1",
            load=LoadResult(
                task_id=task_id(run_id, TaskType.LOAD),
                started_at=LOAD_STARTED,
                worker_id="w-1",
                **result,
            ),
        )
        outbox = await handle(
            sessions, handlers.on_task_succeeded, extract, load_after_extract=True
        )
        return run_id, outbox

    async def test_the_extract_is_dispatched_with_its_load(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = uuid.uuid4()
        due = JobDue(job_definition_id=job.id, run_id=run_id)
        outbox = await handle(sessions, handlers.on_job_due, due, None, load_after_extract=True)

        [(dispatched, _, _)] = dispatches(outbox)
        assert dispatched.task_type is TaskType.EXTRACT
        assert dispatched.then is not None
        order = dispatched.load_order(INLINE)
        assert (order.task_id, order.task_type, order.attempt, order.run_id) == (
            task_id(run_id, TaskType.LOAD),
            TaskType.LOAD,
            1,
            run_id,
        )
        assert (order.plugin, order.config, order.staged) == ("duckdb", LOAD_CONFIG, INLINE)
        # Only the extract exists until it succeeds.
        assert list((await load(sessions, run_id))[1]) == [TaskType.EXTRACT]

    async def test_a_load_run_with_its_extract_completes_the_run_in_one_step(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id, outbox = await self.fused(sessions, job, rows=1)

        run, tasks = await load(sessions, run_id)
        assert run is not None and run.status is RunStatus.COMPLETED
        extract, loaded = tasks[TaskType.EXTRACT], tasks[TaskType.LOAD]
        assert (extract.status, extract.attempt_count) == (TaskStatus.COMPLETED, 1)
        assert (loaded.status, loaded.attempt_count, loaded.rows_processed) == (
            TaskStatus.COMPLETED,
            1,
            1,
        )
        assert loaded.worker_id == "w-1"
        assert loaded.started_at == LOAD_STARTED
        assert dispatches(outbox) == []
        assert [f.status for f in finishes(outbox)] == [RunStatus.COMPLETED]

    async def test_a_failed_load_is_retried_through_the_delay_ladder(
        self, sessions: Sessions
    ) -> None:
        job = await add_job(sessions, max_attempts=3)
        run_id, outbox = await self.fused(sessions, job, error="db down")

        run, tasks = await load(sessions, run_id)
        assert run is not None and run.status is RunStatus.RUNNING
        loaded = tasks[TaskType.LOAD]
        assert (loaded.status, loaded.attempt_count, loaded.error_message) == (
            TaskStatus.RETRYING,
            2,
            "db down",
        )
        [(retry, key, rung)] = dispatches(outbox)
        assert (retry.task_id, retry.attempt, retry.staged) == (loaded.id, 2, INLINE)
        assert key == task_routing_key(TaskType.LOAD)
        assert rung is not None
        assert retry.then is None

    async def test_a_load_that_cannot_succeed_fails_the_run(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id, outbox = await self.fused(sessions, job, error="no such table", retryable=False)

        run, tasks = await load(sessions, run_id)
        assert run is not None and run.status is RunStatus.FAILED
        assert tasks[TaskType.LOAD].status is TaskStatus.FAILED
        assert "LOAD failed after 1 attempt: no such table" in (run.error_message or "")
        assert dispatches(outbox) == []

    async def test_an_extract_reported_without_its_load_has_the_load_dispatched(
        self, sessions: Sessions, job: JobDefinition
    ) -> None:
        run_id = uuid.uuid4()
        due = JobDue(job_definition_id=job.id, run_id=run_id)
        await handle(sessions, handlers.on_job_due, due, None, load_after_extract=True)
        extract = succeeded(run_id, TaskType.EXTRACT, STAGED)
        outbox = await handle(
            sessions, handlers.on_task_succeeded, extract, load_after_extract=True
        )

        [(dispatched, _, _)] = dispatches(outbox)
        assert (dispatched.task_type, dispatched.attempt, dispatched.staged) == (
            TaskType.LOAD,
            1,
            STAGED,
        )
