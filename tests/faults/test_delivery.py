"""What the broker hands over: every event delivered twice, and garbage in every queue."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from common.events import JobDue
from common.settings import Settings
from common.states import TaskType
from common.topology import (
    COORDINATOR_KEYS,
    REASON_HEADER,
    dead_queue,
    events_exchange,
    task_routing_key,
)
from tests.faults.rig import RUNS, Rig

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.postgres]

COPY_HEADER = "x-faults-copy"

DUPLICATE_EXECUTIONS = (
    "engine bug: one attempt delivered twice runs twice at once; the execution that loses "
    "the DuckDB file lock reports TaskFailed first, scheduler/coordinator/handlers.py "
    "on_task_failed retries, and the other execution's TaskSucceeded is then dropped as "
    "superseded (handlers._current): loads that succeeded are retried until max_attempts "
    "and the run ends FAILED. Both executions of an extract also write the same folder "
    "(common/staging.py StagingArea.write: <run>/<task>/part-00000.arrow), so a load can "
    "read a file being rewritten"
)


@dataclass
class Copies:
    made: int = 0


@contextlib.asynccontextmanager
async def every_event_twice(settings: Settings) -> AsyncIterator[Copies]:
    """A meddler on the bus: each message published on `<ns>.events` is published once
    more, right away (a copy is marked, so it is not copied again). Task orders reach two
    workers at once, outcomes reach the coordinator twice, and so on."""
    copies = Copies()
    connection = await aio_pika.connect_robust(settings.broker_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(events_exchange(settings.namespace))
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")

        async def copy(message: AbstractIncomingMessage) -> None:
            async with message.process():
                headers = dict(message.headers or {})
                if COPY_HEADER in headers:
                    return
                twin = aio_pika.Message(
                    message.body,
                    headers={**headers, COPY_HEADER: 1},
                    content_type=message.content_type,
                    message_id=message.message_id,
                    type=message.type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                await exchange.publish(twin, message.routing_key or "", mandatory=False)
                copies.made += 1

        await queue.consume(copy)
        yield copies
    finally:
        await connection.close()


@pytest.mark.timeout(150)
async def test_every_event_delivered_twice(rig: Rig) -> None:
    rig.cluster.coordinator()
    await rig.cluster.workers(2)
    runs = await rig.plan(RUNS)
    async with every_event_twice(rig.settings) as copies:
        await rig.trigger(runs)
        await rig.settle(runs, 60)
    job_dues = len(rig.recorder.of(JobDue))
    rig.notes.append(f"{copies.made} copies published, JobDue seen {job_dues} times")
    assert job_dues == 2 * RUNS
    await rig.finish("every event delivered twice", runs)


def _garbage() -> list[tuple[str, bytes]]:
    """Bodies no consumer can use, for every routing key a queue of the engine takes."""
    keys = [*COORDINATOR_KEYS, *(task_routing_key(t) for t in TaskType)]
    bodies: list[tuple[str, bytes]] = []
    for n, key in enumerate(keys):
        bodies.append((key, f"\xff\x00 not json #{n}".encode("latin-1")))
        bodies.append((key, json.dumps({"poison": n, "hello": "world"}).encode()))
        bodies.append((key, json.dumps([n, "a list"]).encode()))
    unknown_job = {"job_definition_id": str(uuid.uuid4()), "run_id": str(uuid.uuid4())}
    bodies.append((JobDue.routing_key, json.dumps(unknown_job).encode()))
    return bodies


async def _publish_raw(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    """As an outside program would: plain AMQP, no engine code, no headers."""
    connection = await aio_pika.connect(settings.broker_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(events_exchange(settings.namespace))
        for key, body in messages:
            await exchange.publish(aio_pika.Message(body), key)
    finally:
        await connection.close()


async def _dead_letters(settings: Settings) -> list[tuple[bytes, str]]:
    """Everything on `<ns>.dead`: (body, reason)."""
    connection = await aio_pika.connect(settings.broker_url)
    found: list[tuple[bytes, str]] = []
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(dead_queue(settings.namespace), ensure=False)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            found.append((message.body, str((message.headers or {}).get(REASON_HEADER, ""))))
    finally:
        await connection.close()
    return found


@pytest.mark.timeout(150)
async def test_poison_message_in_every_queue(rig: Rig) -> None:
    """Garbage ahead of and among real work in the coordinator's queue and both task
    queues: each piece is set aside once on `<ns>.dead` with its reason, every real run
    completes, and no consumer dies."""
    garbage = _garbage()
    await _publish_raw(rig.settings, garbage[::2])
    rig.cluster.coordinator()
    await rig.cluster.workers(2)
    runs = await rig.plan(RUNS)
    await rig.trigger(runs[: RUNS // 2])
    await _publish_raw(rig.settings, garbage[1::2])
    await rig.trigger(runs[RUNS // 2 :])
    await rig.settle(runs, 60)
    rig.notes.append(f"{len(garbage)} garbage messages on {len({k for k, _ in garbage})} keys")
    await rig.finish("poison message in every queue", runs)
    dead = await _dead_letters(rig.settings)
    bodies = [body for body, _ in dead]
    for key, body in garbage:
        assert bodies.count(body) == 1, f"garbage on {key} dead-lettered {bodies.count(body)}x"
    assert all(reason for _, reason in dead), dead
    assert len(dead) == len(garbage), [b for b in bodies if b not in {g for _, g in garbage}]
