"""`publish_together` against the real broker: it drives aiormq's channel bookkeeping
(delivery tags, confirmations, returns) itself, so these hold it to what `basic_publish`
promises, also when the two are mixed on one channel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiormq
import pytest
from aiormq.abc import DeliveredMessage
from pamqp import commands as spec

from common.publishing import Publish, publish_together

QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}


@pytest.fixture
async def connection(broker_url: str) -> AsyncIterator[aiormq.Connection]:
    connection = await aiormq.connect(broker_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def queue(connection: aiormq.Connection, namespace: str) -> AsyncIterator[str]:
    channel = await connection.channel()
    name = f"{namespace}.together"
    await channel.queue_declare(name, durable=True, arguments=QUEUE_ARGUMENTS)
    try:
        yield name
    finally:
        await channel.queue_delete(name)
        await channel.close()


def message(channel: aiormq.Channel, body: bytes, routing_key: str, mandatory: bool) -> Publish:
    return Publish(
        channel=channel,
        body=body,
        exchange="",
        routing_key=routing_key,
        properties=spec.Basic.Properties(message_id=uuid.uuid4().hex, delivery_mode=2),
        mandatory=mandatory,
    )


async def drain(connection: aiormq.Connection, queue: str, count: int) -> list[bytes]:
    """The next `count` bodies on `queue`, in the order the broker delivers them."""
    channel = await connection.channel()
    bodies: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_message(delivered: DeliveredMessage) -> None:
        await bodies.put(delivered.body)

    await channel.basic_consume(queue, on_message, no_ack=True)
    try:
        return [await asyncio.wait_for(bodies.get(), 10) for _ in range(count)]
    finally:
        await channel.close()


async def test_messages_written_together_arrive_in_order_once_confirmed(
    connection: aiormq.Connection, queue: str
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    bodies = [f"m{i}".encode() for i in range(50)]
    # One over the frame size: it goes out as several body frames within the one write.
    bodies.append(b"x" * (connection.connection_tune.frame_max + 10))

    await publish_together([message(channel, b, queue, mandatory=True) for b in bodies])

    assert channel.confirmations == {}
    assert await drain(connection, queue, len(bodies)) == bodies


async def test_an_unroutable_mandatory_message_fails_alone_and_the_tags_stay_matched(
    connection: aiormq.Connection, queue: str
) -> None:
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    nowhere = f"{queue}.nobody"

    with pytest.raises(aiormq.exceptions.PublishError):
        await publish_together(
            [
                message(channel, b"a", queue, mandatory=True),
                message(channel, b"lost", nowhere, mandatory=True),
                message(channel, b"b", queue, mandatory=True),
            ]
        )
    # aiormq's own publish on the same channel after it, then together again: each
    # confirm still finds its own publish (a wrong tag would hang or raise here).
    await channel.basic_publish(b"c", routing_key=queue, mandatory=True)
    await publish_together([message(channel, b"d", queue, mandatory=True)])
    with pytest.raises(aiormq.exceptions.PublishError):
        await publish_together([message(channel, b"lost again", nowhere, mandatory=True)])

    assert await drain(connection, queue, 4) == [b"a", b"b", b"c", b"d"]


async def test_a_channel_without_confirms_is_written_and_not_waited_on(
    connection: aiormq.Connection, queue: str
) -> None:
    confirmed = await connection.channel(publisher_confirms=True)
    notices = await connection.channel(publisher_confirms=False)

    await publish_together(
        [
            message(notices, b"notice", queue, mandatory=False),
            message(confirmed, b"fact", queue, mandatory=True),
        ]
    )

    # Both arrive; their order is not kept across channels (each is its own process in
    # the broker), only within one.
    assert sorted(await drain(connection, queue, 2)) == [b"fact", b"notice"]


async def test_a_closed_channel_is_refused_before_anything_is_written(
    connection: aiormq.Connection, queue: str
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    open_channel = await connection.channel(publisher_confirms=True)
    await channel.close()

    with pytest.raises(aiormq.exceptions.ChannelInvalidStateError):
        await publish_together(
            [
                message(open_channel, b"not sent", queue, mandatory=True),
                message(channel, b"closed", queue, mandatory=True),
            ]
        )

    # Nothing of it went out, and the open channel's numbering is intact.
    await publish_together([message(open_channel, b"after", queue, mandatory=True)])
    assert await drain(connection, queue, 1) == [b"after"]
    assert open_channel.delivery_tag == 1
