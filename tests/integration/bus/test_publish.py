"""`Bus.publish` against the real broker: what a message carries, and what happens when no
queue takes it (facts must not vanish; notices may)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import aiormq
import pytest
from aio_pika.abc import AbstractIncomingMessage

from common.bus import Bus, connect_bus
from common.events import JobDue, TaskProgress
from common.states import Trigger
from common.topology import DELAY_HEADER, rung_name

TRACEPARENT = f"00-{'1' * 32}-{'2' * 16}-01"


@pytest.fixture
async def bus(broker_url: str, clean_namespace: str) -> AsyncIterator[Bus]:
    bus = await connect_bus(broker_url, clean_namespace)
    try:
        yield bus
    finally:
        await bus.close()


async def received(bus: Bus, key: str) -> asyncio.Queue[AbstractIncomingMessage]:
    inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    queue = await bus.declare_private_queue([key])
    await queue.consume(inbox.put, no_ack=True)
    return inbox


async def test_a_published_event_carries_its_identity_and_trace_headers(bus: Bus) -> None:
    inbox = await received(bus, "custom.key")
    event = JobDue(job_definition_id=uuid.uuid4(), run_id=uuid.uuid4(), trigger=Trigger.MANUAL)

    await bus.publish(
        event, "custom.key", headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    )

    message = await asyncio.wait_for(inbox.get(), 10)
    assert JobDue.model_validate_json(message.body) == event
    assert message.message_id == str(event.event_id)
    assert message.type == "JobDue"
    assert message.content_type == "application/json"
    assert message.delivery_mode == 2  # persistent
    assert message.headers["traceparent"] == TRACEPARENT


async def test_an_event_no_queue_takes_is_an_error(bus: Bus) -> None:
    event = JobDue(job_definition_id=uuid.uuid4(), run_id=uuid.uuid4(), trigger=Trigger.MANUAL)
    with pytest.raises(aiormq.exceptions.PublishError):
        await bus.publish(event, "nobody.listens.here")


async def test_a_notice_no_queue_takes_is_dropped_quietly(bus: Bus) -> None:
    notice = TaskProgress(task_id=uuid.uuid4(), run_id=uuid.uuid4(), attempt=1, rows=5)
    await bus.publish(notice, "nobody.listens.here")


async def test_a_delayed_event_goes_through_its_rung(bus: Bus) -> None:
    inbox = await received(bus, "custom.delayed")
    event = JobDue(job_definition_id=uuid.uuid4(), run_id=uuid.uuid4(), trigger=Trigger.MANUAL)

    await bus.publish(event, "custom.delayed", delay_rung=1)

    message = await asyncio.wait_for(inbox.get(), 15)
    assert json.loads(message.body)["event_id"] == str(event.event_id)
    assert message.headers[DELAY_HEADER] == rung_name(1)
    assert message.headers.get("x-death"), "it waited in a delay queue first"
