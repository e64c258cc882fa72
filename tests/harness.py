"""Helpers for tests that drive a real engine: an in-process engine and a bus tap.

A tap is a private queue bound to chosen routing keys, declared *before* the action under
test, so a test awaits the events it expects instead of sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import select

from common.aio import stop_tasks
from common.bus import Bus, Outgoing, connect_bus
from common.db.engine import make_engine, make_read_sessionmaker, make_sessionmaker
from common.db.models import JobDefinition, JobRun, Task
from common.events import (
    EVENTS_BY_ROUTING_KEY,
    Event,
    RunFinished,
    TaskFailed,
    TaskOutcomes,
    TaskSucceeded,
    unfolded,
)
from common.settings import Settings
from common.states import TaskType
from orc import runtime

E = TypeVar("E", bound=Event)


class Tap:
    """Collects events published on `<ns>.events` under the given routing keys."""

    def __init__(self, bus: Bus, keys: Sequence[str]) -> None:
        self.bus = bus
        outcomes = {TaskSucceeded.routing_key, TaskFailed.routing_key}
        # A worker sends outcomes that finish together in one `TaskOutcomes`.
        self.keys = (*keys, TaskOutcomes.routing_key) if outcomes & set(keys) else keys
        self.received: asyncio.Queue[Event] = asyncio.Queue()

    async def start(self) -> None:
        queue = await self.bus.declare_private_queue(self.keys)
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        model = EVENTS_BY_ROUTING_KEY.get(message.routing_key or "")
        if model is None:
            return
        # Status changes travel folded, one message per transaction, the scheduler's runs
        # one message per tick, a busy worker's outcomes several a message: a test awaits
        # each.
        for one in unfolded(model.model_validate_json(message.body)):
            await self.received.put(one)

    async def next(self, model: type[E], timeout: float = 20.0, **match: Any) -> E:
        """The next event of this type whose fields equal `match` (others are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.received.get()
                if isinstance(event, model) and all(
                    getattr(event, k) == v for k, v in match.items()
                ):
                    return event

    async def run_finished(self, run_id: uuid.UUID, timeout: float = 20.0) -> RunFinished:
        return await self.next(RunFinished, timeout, run_id=run_id)

    async def finished_runs(self, count: int, timeout: float = 60.0) -> list[RunFinished]:
        seen: dict[uuid.UUID, RunFinished] = {}
        async with asyncio.timeout(timeout):
            while len(seen) < count:
                event = await self.next(RunFinished, timeout)
                seen[event.run_id] = event
        return list(seen.values())


@contextlib.asynccontextmanager
async def tap(settings: Settings, *keys: str) -> AsyncIterator[Tap]:
    bus = await connect_bus(settings.broker_url, settings.namespace)
    try:
        t = Tap(bus, keys or (RunFinished.routing_key,))
        await t.start()
        yield t
    finally:
        await bus.close()


@contextlib.asynccontextmanager
async def engine_running(
    settings: Settings, components: Sequence[str] = ("coordinator", "worker")
) -> AsyncIterator[None]:
    """Runs the chosen components in this event loop, as `orc up` would."""
    chosen: dict[str, runtime.Component] = {
        "coordinator": runtime.run_coordinator,
        "scheduler": runtime.run_scheduler,
        "worker": runtime.worker_runner(runtime.ALL_QUEUES, 4),
        "api": runtime.run_api,
    }
    async with runtime.resources(settings) as res:
        tasks = [asyncio.create_task(chosen[name](res), name=name) for name in components]
        try:
            yield
        finally:
            stuck = await stop_tasks(tasks, runtime.stop_seconds(settings))
            assert not stuck, f"components did not stop: {stuck}"
            for task in tasks:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]


async def publish(settings: Settings, *events: Event) -> None:
    """Publish events through the engine's own bus code, as a component would."""
    bus = await connect_bus(settings.broker_url, settings.namespace)
    try:
        await bus.publish_many(Outgoing(e) for e in events)
    finally:
        await bus.close()


async def publish_raw(
    settings: Settings, routing_key: str, body: bytes, mandatory: bool = False
) -> None:
    """Publish as an outside program would: plain aio-pika, no engine code. With
    `mandatory`, raises `aio_pika.exceptions.DeliveryError` if no queue takes it."""
    connection = await aio_pika.connect(settings.broker_url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=mandatory)
        exchange = await channel.get_exchange(f"{settings.namespace}.events")
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=routing_key,
            mandatory=mandatory,
        )
    finally:
        await connection.close()


async def insert_job(settings: Settings, **fields: Any) -> JobDefinition:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            job = JobDefinition(**fields)
            session.add(job)
        return job
    finally:
        await engine.dispose()


async def generate_job(settings: Settings, name: str, rows: int = 1) -> JobDefinition:
    """A job that only orchestrates: `generate` `rows` rows into `null`, one attempt."""
    return await insert_job(
        settings,
        name=name,
        extractor_type="generate",
        extractor_config={"rows": rows},
        loader_type="null",
        loader_config={},
        max_attempts=1,
    )


async def read_run(settings: Settings, run_id: uuid.UUID) -> tuple[JobRun | None, list[Task]]:
    engine = make_engine(settings.database_url)
    try:
        async with make_read_sessionmaker(engine)() as session:
            run = await session.get(JobRun, run_id)
            tasks = (await session.execute(select(Task).where(Task.job_run_id == run_id))).scalars()
            return run, sorted(tasks, key=lambda t: t.task_type is TaskType.LOAD)
    finally:
        await engine.dispose()


async def all_runs(settings: Settings) -> list[JobRun]:
    engine = make_engine(settings.database_url)
    try:
        async with make_read_sessionmaker(engine)() as session:
            return list((await session.execute(select(JobRun))).scalars())
    finally:
        await engine.dispose()


async def take(queue: aio_pika.abc.AbstractQueue, timeout: float = 10.0) -> AbstractIncomingMessage:
    """Wait for the next message of a queue (unacked: the caller settles it)."""
    async with asyncio.timeout(timeout), queue.iterator() as messages:
        async for message in messages:
            return message
    raise AssertionError("queue iterator ended")
