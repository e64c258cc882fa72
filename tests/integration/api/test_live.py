"""Live status over Server-Sent Events, fed by notices published on the real broker.

Here the test publishes the coordinator's and workers' notices itself; the stream of a
run that the engine really runs is in `tests/e2e/test_live_run.py`.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import pytest

from api.app import create_app
from api.live import LiveHub, Subscription, is_stale
from api.schemas import RunOut, RunSnapshot, TaskOut
from common.bus import Bus, connect_bus
from common.db.engine import make_engine, make_sessionmaker
from common.db.models import JobDefinition, JobRun, Task
from common.events import RunFinished, StateChanged, StateChanges, TaskProgress
from common.settings import Settings
from common.states import RunStatus, TaskStatus, TaskType, Trigger
from orc.client import StreamEvent, parse_sse
from tests.harness import publish_raw
from tests.integration.api.conftest import http_client, served, with_admin_token


async def events_of(response: httpx.Response) -> AsyncIterator[StreamEvent]:
    """The stream's events as they arrive (the same parser as the CLI's)."""
    lines: list[str] = []
    async for line in response.aiter_lines():
        lines.append(line)
        if line == "":
            for event in parse_sse(iter(lines)):
                yield event
            lines.clear()


class Scene:
    """A job with a run and its EXTRACT task in the store, and a bus to publish on."""

    def __init__(self, settings: Settings, bus: Bus) -> None:
        self.settings = settings
        self.bus = bus
        self.job_id = uuid.uuid4()
        self.run_id = uuid.uuid4()
        self.task_id = uuid.uuid4()

    async def store(self, run_status: RunStatus, task_status: TaskStatus) -> None:
        engine = make_engine(self.settings.database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                session.add(
                    JobDefinition(
                        id=self.job_id,
                        name=f"job-{self.job_id.hex[:6]}",
                        extractor_type="csv",
                        extractor_config={"path": "a.csv"},
                        loader_type="duckdb",
                        loader_config={"database": "a.duckdb", "table": "t"},
                    )
                )
                await session.flush()
                now = datetime.now(UTC)
                session.add(
                    JobRun(
                        id=self.run_id,
                        job_definition_id=self.job_id,
                        status=run_status,
                        trigger=Trigger.MANUAL,
                        created_at=now,
                    )
                )
                await session.flush()
                session.add(
                    Task(
                        id=self.task_id,
                        job_run_id=self.run_id,
                        task_type=TaskType.EXTRACT,
                        status=task_status,
                        attempt_count=1,
                        max_attempts=3,
                        created_at=now,
                    )
                )
                await session.commit()
        finally:
            await engine.dispose()

    async def set_run_status(self, status: RunStatus) -> None:
        engine = make_engine(self.settings.database_url)
        try:
            async with make_sessionmaker(engine)() as session:
                run = await session.get(JobRun, self.run_id)
                assert run is not None
                run.status = status
                await session.commit()
        finally:
            await engine.dispose()

    def state(self, task_status: TaskStatus | None, run_status: RunStatus) -> StateChanges:
        """One status change, as the coordinator publishes it (inside `StateChanges`)."""
        change = StateChanged(
            job_definition_id=self.job_id,
            run_id=self.run_id,
            run_status=run_status,
            task_id=self.task_id if task_status else None,
            task_type=TaskType.EXTRACT if task_status else None,
            task_status=task_status,
            attempt=1 if task_status else None,
        )
        return StateChanges(changes=(change,))


@pytest.fixture
async def bus(sqlite_settings: Settings) -> AsyncIterator[Bus]:
    connected = await connect_bus(sqlite_settings.broker_url, sqlite_settings.namespace)
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
def settings_(sqlite_settings: Settings) -> Settings:
    return with_admin_token(sqlite_settings)


async def test_a_run_stream(settings_: Settings, bus: Bus) -> None:
    scene, other = Scene(settings_, bus), Scene(settings_, bus)
    await scene.store(RunStatus.RUNNING, TaskStatus.RUNNING)
    await other.store(RunStatus.RUNNING, TaskStatus.RUNNING)
    received: list[StreamEvent] = []
    async with served(settings_) as base, http_client(base) as http:
        url = f"/job_runs/{scene.run_id}/events"
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = events_of(response)
            snapshot = await anext(stream)
            assert snapshot.name == "snapshot"
            assert snapshot.data["run"]["id"] == str(scene.run_id)
            assert snapshot.data["run"]["status"] == "RUNNING"
            assert [t["id"] for t in snapshot.data["tasks"]] == [str(scene.task_id)]

            await bus.publish(other.state(TaskStatus.COMPLETED, RunStatus.RUNNING))
            await bus.publish(
                TaskProgress(task_id=scene.task_id, run_id=scene.run_id, attempt=1, rows=500)
            )
            await bus.publish(scene.state(TaskStatus.COMPLETED, RunStatus.RUNNING))
            await bus.publish(scene.state(None, RunStatus.COMPLETED))
            await bus.publish(
                RunFinished(
                    run_id=scene.run_id, job_definition_id=scene.job_id, status=RunStatus.COMPLETED
                )
            )
            async with asyncio.timeout(10):
                received = [event async for event in stream]
    assert [e.name for e in received] == ["progress", "state", "state", "finished"]
    assert received[0].data["rows"] == 500
    assert received[1].data["task_status"] == "COMPLETED"
    assert received[2].data["run_status"] == "COMPLETED"
    assert received[3].data["status"] == "COMPLETED"
    assert all(e.id == e.data["event_id"] for e in received)


async def test_a_finished_run_streams_its_snapshot_and_ends(settings_: Settings, bus: Bus) -> None:
    scene = Scene(settings_, bus)
    await scene.store(RunStatus.FAILED, TaskStatus.FAILED)
    async with (
        served(settings_) as base,
        http_client(base) as http,
        http.stream("GET", f"/job_runs/{scene.run_id}/events") as response,
        asyncio.timeout(10),
    ):
        received = [event async for event in events_of(response)]
    assert [e.name for e in received] == ["snapshot", "finished"]
    assert received[1].data["status"] == "FAILED"


async def test_the_store_ends_a_stream_whose_notice_was_lost(settings_: Settings, bus: Bus) -> None:
    scene = Scene(settings_, bus)
    await scene.store(RunStatus.RUNNING, TaskStatus.RUNNING)
    app = create_app(settings_)
    app.state.live = LiveHub(keepalive_seconds=0.2)
    async with (
        served(settings_, app) as base,
        http_client(base) as http,
        http.stream("GET", f"/job_runs/{scene.run_id}/events") as response,
    ):
        stream = events_of(response)
        assert (await anext(stream)).name == "snapshot"
        await scene.set_run_status(RunStatus.CANCELLED)
        async with asyncio.timeout(10):
            rest = [event async for event in stream]
    assert [e.name for e in rest] == ["finished"]
    assert rest[0].data["status"] == "CANCELLED"


async def _routed(settings: Settings, notice: RunFinished) -> bool:
    """Whether any queue takes the notice (a mandatory publish comes back if none does)."""
    try:
        await publish_raw(
            settings, notice.routing_key, notice.model_dump_json().encode(), mandatory=True
        )
    except aio_pika.exceptions.DeliveryError:
        return False
    return True


async def test_the_hub_takes_notices_only_while_someone_streams(
    sqlite_settings: Settings, bus: Bus
) -> None:
    hub = LiveHub(linger_seconds=3600)
    await hub.start(bus)
    notice = RunFinished(
        run_id=uuid.uuid4(), job_definition_id=uuid.uuid4(), status=RunStatus.COMPLETED
    )
    assert not hub.listening
    assert not await _routed(sqlite_settings, notice)
    async with hub.subscribe() as subscription:
        assert hub.listening
        assert await _routed(sqlite_settings, notice)
        received = await subscription.next(10)
        assert isinstance(received, RunFinished) and received.run_id == notice.run_id
    # The binding lingers for a client that comes back, then goes.
    assert hub.listening and await _routed(sqlite_settings, notice)
    await hub.quiet()
    assert not hub.listening
    assert not await _routed(sqlite_settings, notice)


async def test_unknown_run_and_no_token(settings_: Settings) -> None:
    async with served(settings_) as base:
        async with http_client(base) as http:
            answer = await http.get(f"/job_runs/{uuid.uuid4()}/events")
            assert answer.status_code == 404
            assert answer.json()["status_code"] == 404
        async with http_client(base, token=None) as anonymous:
            assert (await anonymous.get("/events")).status_code == 401


async def test_all_events_of_one_job(settings_: Settings, bus: Bus) -> None:
    mine, theirs = Scene(settings_, bus), Scene(settings_, bus)
    await mine.store(RunStatus.RUNNING, TaskStatus.RUNNING)
    await theirs.store(RunStatus.PENDING, TaskStatus.PENDING)
    params = {"job_definition_id": str(mine.job_id)}
    async with (
        served(settings_) as base,
        http_client(base) as http,
        http.stream("GET", "/events", params=params) as response,
    ):
        stream = events_of(response)
        snapshot = await anext(stream)
        assert snapshot.name == "snapshot"
        assert [r["run"]["id"] for r in snapshot.data["runs"]] == [str(mine.run_id)]

        await bus.publish(theirs.state(TaskStatus.RUNNING, RunStatus.RUNNING))
        # Progress names no job: the stream finds the run's job in the store.
        await bus.publish(
            TaskProgress(task_id=theirs.task_id, run_id=theirs.run_id, attempt=1, rows=1)
        )
        await bus.publish(TaskProgress(task_id=mine.task_id, run_id=mine.run_id, attempt=1, rows=7))
        await bus.publish(mine.state(TaskStatus.COMPLETED, RunStatus.RUNNING))
        async with asyncio.timeout(10):
            progress = await anext(stream)
            state = await anext(stream)
    assert (progress.name, progress.data["rows"]) == ("progress", 7)
    assert (state.name, state.data["run_id"]) == ("state", str(mine.run_id))


async def test_all_events_without_a_filter(settings_: Settings, bus: Bus) -> None:
    a, b = Scene(settings_, bus), Scene(settings_, bus)
    await a.store(RunStatus.RUNNING, TaskStatus.RUNNING)
    await b.store(RunStatus.COMPLETED, TaskStatus.COMPLETED)
    async with (
        served(settings_) as base,
        http_client(base) as http,
        http.stream("GET", "/events") as response,
    ):
        stream = events_of(response)
        snapshot = await anext(stream)
        assert [r["run"]["id"] for r in snapshot.data["runs"]] == [str(a.run_id)]
        await bus.publish(b.state(None, RunStatus.COMPLETED))
        await bus.publish(a.state(None, RunStatus.FAILED))
        async with asyncio.timeout(10):
            seen = [await anext(stream) for _ in range(2)]
    assert [e.data["run_id"] for e in seen] == [str(b.run_id), str(a.run_id)]


async def test_stopping_the_server_ends_open_streams(settings_: Settings) -> None:
    async def read_all(base: str, ready: asyncio.Event) -> list[str]:
        async with http_client(base) as http, http.stream("GET", "/events") as response:
            names = []
            async for event in events_of(response):
                names.append(event.name)
                ready.set()
            return names

    ready = asyncio.Event()
    async with served(settings_) as base:
        reader = asyncio.create_task(read_all(base, ready))
        await asyncio.wait_for(ready.wait(), 10)
    # `served` returned: the server stopped although a stream was open, and it ended.
    assert await asyncio.wait_for(reader, 5) == ["snapshot"]


def _snapshot(run: RunStatus, task: TaskStatus, attempt: int) -> RunSnapshot:
    run_id, task_id, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    return RunSnapshot(
        run=RunOut(
            id=run_id,
            job_definition_id=uuid.uuid4(),
            status=run,
            trigger=Trigger.MANUAL,
            scheduled_for=None,
            started_at=None,
            completed_at=None,
            error_message=None,
            created_at=now,
        ),
        tasks=[
            TaskOut(
                id=task_id,
                job_run_id=run_id,
                task_type=TaskType.EXTRACT,
                status=task,
                attempt_count=attempt,
                max_attempts=3,
                error_message=None,
                started_at=None,
                completed_at=None,
                created_at=now,
                worker_id=None,
                rows_processed=None,
            )
        ],
    )


def _notice(snap: RunSnapshot, run: RunStatus, task: TaskStatus | None, attempt: int) -> Any:
    return StateChanged(
        job_definition_id=snap.run.job_definition_id,
        run_id=snap.run.id,
        run_status=run,
        task_id=snap.tasks[0].id if task else None,
        task_status=task,
        attempt=attempt if task else None,
    )


R, T = RunStatus, TaskStatus


@pytest.mark.parametrize(
    ("snapshot", "notice", "stale"),
    [
        # Older than the snapshot, or the same: dropped.
        ((R.RUNNING, T.RUNNING, 1), (R.PENDING, None, 0), True),
        ((R.RUNNING, T.RUNNING, 1), (R.RUNNING, None, 0), True),
        ((R.RUNNING, T.RUNNING, 1), (R.RUNNING, T.PENDING, 1), True),
        ((R.RUNNING, T.RUNNING, 1), (R.RUNNING, T.RUNNING, 1), True),
        ((R.RUNNING, T.RUNNING, 2), (R.RUNNING, T.RETRYING, 1), True),
        # Newer: kept.
        ((R.RUNNING, T.RUNNING, 1), (R.RUNNING, T.COMPLETED, 1), False),
        ((R.RUNNING, T.RUNNING, 1), (R.RUNNING, T.RETRYING, 1), False),
        ((R.RUNNING, T.RETRYING, 1), (R.RUNNING, T.RUNNING, 2), False),
        ((R.PENDING, T.PENDING, 0), (R.RUNNING, None, 0), False),
        ((R.RUNNING, T.RUNNING, 1), (R.FAILED, None, 0), False),
    ],
)
def test_notices_older_than_the_snapshot_are_stale(
    snapshot: tuple[RunStatus, TaskStatus, int],
    notice: tuple[RunStatus, TaskStatus | None, int],
    stale: bool,
) -> None:
    snap = _snapshot(*snapshot)
    assert is_stale(_notice(snap, *notice), snap) is stale


def test_a_task_the_snapshot_does_not_show_is_news() -> None:
    snap = _snapshot(RunStatus.RUNNING, TaskStatus.COMPLETED, 1)
    load = StateChanged(
        job_definition_id=snap.run.job_definition_id,
        run_id=snap.run.id,
        run_status=RunStatus.RUNNING,
        task_id=uuid.uuid4(),
        task_type=TaskType.LOAD,
        task_status=TaskStatus.PENDING,
        attempt=1,
    )
    assert not is_stale(load, snap)


def test_progress_of_a_finished_task_is_stale() -> None:
    snap = _snapshot(RunStatus.RUNNING, TaskStatus.COMPLETED, 1)
    progress = TaskProgress(task_id=snap.tasks[0].id, run_id=snap.run.id, attempt=1, rows=3)
    assert is_stale(progress, snap)
    running = _snapshot(RunStatus.RUNNING, TaskStatus.RUNNING, 2)
    older = TaskProgress(task_id=running.tasks[0].id, run_id=running.run.id, attempt=1, rows=3)
    newer = TaskProgress(task_id=running.tasks[0].id, run_id=running.run.id, attempt=2, rows=3)
    assert is_stale(older, running) and not is_stale(newer, running)


async def test_a_slow_subscription_overflows() -> None:
    hub = LiveHub()
    async with hub.subscribe() as subscription:
        assert hub.subscribers == 1
        subscription.max_backlog = 2
        run_id, job_id = uuid.uuid4(), uuid.uuid4()
        for _ in range(3):
            hub.deliver(
                RunFinished(run_id=run_id, job_definition_id=job_id, status=RunStatus.FAILED)
            )
        assert subscription.overflowed and subscription.backlog() == 2
        assert hub.job_of(run_id) == job_id
    assert hub.subscribers == 0
    assert isinstance(Subscription(), Subscription)


def test_sse_parser() -> None:
    lines = [": comment", "event: state", 'data: {"a":', "data: 1}", "id: 7", "", "data: x", ""]
    assert list(parse_sse(iter(lines))) == [
        StreamEvent(name="state", data={"a": 1}, id="7"),
        StreamEvent(name="message", data="x", id=None),
    ]
    assert json.loads('{"a":\n1}') == {"a": 1}
