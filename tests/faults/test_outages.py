"""The services themselves fail: RabbitMQ restarts, PostgreSQL stops for 10 s, and the
broker's `consumer_timeout` is lowered under a long task.

These act on the shared broker and database server: every test running at the same time
is disrupted too, hence the `disruptive` marker. They are part of the normal run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from common.events import TaskStarted
from common.ids import task_id
from common.settings import Settings
from common.states import TaskType
from tests.faults import services
from tests.faults.rig import RUNS, JobShape, Rig

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.postgres, pytest.mark.disruptive]

BROKER_OUTAGE_SECONDS = 3.0
DATABASE_OUTAGE_SECONDS = 10.0


@pytest.mark.timeout(240)
async def test_rabbitmq_restart_in_the_middle_of_a_batch(rig: Rig) -> None:
    rig.cluster.coordinator()
    await rig.cluster.workers(2)
    runs = await rig.plan(RUNS, JobShape(extract_pause=0.3))
    await rig.trigger(runs)
    await rig.recorder.expect(lambda: rig.finished(runs) >= 4, 60, "four runs finished")
    before = rig.finished(runs)
    async with services.rabbitmq_stopped():
        await asyncio.sleep(BROKER_OUTAGE_SECONDS)  # the outage itself
    rig.notes.append(f"stop_app/start_app after {before} runs finished")
    await rig.finish("RabbitMQ restart mid-batch", runs, timeout=120)


@pytest.mark.timeout(240)
async def test_database_down_for_ten_seconds(rig: Rig) -> None:
    rig.cluster.coordinator()
    await rig.cluster.workers(2)
    runs = await rig.plan(RUNS, JobShape(extract_pause=0.3))
    await rig.trigger(runs)
    await rig.recorder.expect(lambda: rig.finished(runs) >= 4, 60, "four runs finished")
    before = rig.finished(runs)
    async with services.postgres_stopped():
        await asyncio.sleep(DATABASE_OUTAGE_SECONDS)  # the outage itself
    rig.notes.append(f"PostgreSQL stopped {DATABASE_OUTAGE_SECONDS:g}s after {before} runs")
    await rig.finish("PostgreSQL down 10 s", runs, timeout=120)


LONG_TASK_SECONDS = 10.0
CONSUMER_TIMEOUT_MS = 5000


async def _seconds_until_taken_back(settings: Settings) -> float:
    """The control: a consumer that never acks its message has its channel closed by the
    broker once `consumer_timeout` is over."""
    connection = await aio_pika.connect(settings.broker_url)
    try:
        channel = await connection.channel()
        closed = asyncio.Event()
        channel.close_callbacks.add(lambda *_: closed.set())
        queue = await channel.declare_queue(exclusive=True)
        await channel.default_exchange.publish(aio_pika.Message(b"held"), queue.name)
        start = time.monotonic()
        await queue.consume(_never_ack)
        await asyncio.wait_for(closed.wait(), 30)
        return time.monotonic() - start
    finally:
        await connection.close()


async def _never_ack(message: AbstractIncomingMessage) -> None:
    return None


@pytest.mark.timeout(240)
async def test_long_task_outlives_consumer_timeout(rig: Rig) -> None:
    """With `consumer_timeout` at 5 s (checked every second), a message un-acked for longer
    is taken back by the broker (its channel closed) and handed to another consumer: a
    second run of the same attempt. A worker acks a long task's message after
    `ORC_LONG_TASK_ACK_SECONDS` (2 s) and vouches for it by heartbeat from then on: each
    task runs once. (With the early ack off, the tasks are taken back again and again and
    end on `<ns>.dead` as poison.)"""
    async with services.consumer_timeout(CONSUMER_TIMEOUT_MS):
        control = asyncio.create_task(_seconds_until_taken_back(rig.settings))
        rig.cluster.coordinator()
        # Six plugin threads per worker process (the default executor on two cores): the
        # last tasks wait for a thread, their messages already acked.
        await rig.cluster.workers(2, concurrency=10, env={"ORC_LONG_TASK_ACK_SECONDS": "2"})
        runs = await rig.plan(RUNS, JobShape(extract_pause=LONG_TASK_SECONDS, block_bytes=1 << 20))
        await rig.trigger(runs)
        await rig.settle(runs, 90)
        taken_back = await control
    extracts = {task_id(r.run_id, TaskType.EXTRACT) for r in runs}
    starts = Counter(
        (s.task_id, s.attempt) for s in rig.recorder.of(TaskStarted) if s.task_id in extracts
    )
    rig.notes.append(
        f"{LONG_TASK_SECONDS:g}s tasks; consumer_timeout 5s (a held message was taken back "
        f"after {taken_back:.0f}s)"
    )
    await rig.finish("long task past consumer_timeout", runs)
    assert sorted(starts.values()) == [1] * RUNS, starts
    assert {attempt for _, attempt in starts} == {1}
