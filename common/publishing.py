"""Several publishes in one write to the broker, their confirms awaited together.

aiormq's `basic_publish` sends each message on its own: a lock, a timeout scope and a
queued frame each, and one write to the socket each, which the broker reads and handles
one by one. The coordinator publishes a committed batch's events at once (a dispatch and
a `RunFinished` a run), so here they are marshalled into one payload and written once.

It does what `basic_publish` does with the channel's own bookkeeping (its delivery tags,
its confirmation futures, the map of message ids its returns are matched by), under the
same lock, so it mixes with `basic_publish` on one channel. That bookkeeping is aiormq's,
not its public API: `pyproject.toml` pins aiormq to the minor version this was written
against, and `tests/integration/bus/test_publishing.py` holds it to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import aiormq
import pamqp.frame
from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands as spec
from pamqp.base import Frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader


@dataclass(frozen=True)
class Publish:
    """One message for `publish_together`; `properties.message_id` must be set (a
    returned message is matched to its confirm by it)."""

    channel: aiormq.Channel
    body: bytes
    exchange: str
    routing_key: str
    properties: spec.Basic.Properties
    mandatory: bool = False


async def publish_together(publishes: Sequence[Publish]) -> None:
    """Write every message in one go, in order (the broker keeps the order within each
    channel, not across channels), then await the confirms of those on channels in
    confirm mode. Raises as `basic_publish` would: the channel's close
    reason, or `PublishError` for a mandatory message no queue took."""
    if not publishes:
        return
    payload = b"".join(_marshalled(p) for p in publishes)
    channels = {id(p.channel): p.channel for p in publishes}.values()
    # The confirm-mode channels' locks, in a fixed order: their delivery tags must be
    # assigned in the order the broker receives the messages.
    locked = sorted((c for c in channels if c.publisher_confirms), key=lambda c: c.number)
    confirmations: list[asyncio.Future[object]] = []
    async with contextlib.AsyncExitStack() as stack:
        for channel in locked:
            await stack.enter_async_context(channel.lock)  # raises if the channel closed
        for channel in channels:
            if channel.is_closed:
                raise ChannelInvalidStateError(f"{channel} is closed")
        for p in publishes:
            p.channel.delivery_tag += 1
            if p.channel.publisher_confirms:
                confirmations.append(_expect_confirm(p))
        try:
            # The channels of one connection share its (bounded) write queue.
            await publishes[0].channel.write_queue.put(
                ChannelFrame(payload=payload, should_close=False)
            )
        except BaseException:
            # Not sent (cancelled while the queue was full): the broker has not seen
            # these numbers, so the channels' next publishes reuse them.
            for p in reversed(publishes):
                p.channel.confirmations.pop(p.channel.delivery_tag, None)
                p.channel.delivery_tag -= 1
            for confirmation in confirmations:
                confirmation.cancel()
            raise
    if confirmations:
        await asyncio.gather(*confirmations)


def _marshalled(p: Publish) -> bytes:
    if p.properties.message_id is None:
        raise ValueError("publish_together needs a message_id on every message")
    frames: list[Frame | ContentHeader | ContentBody] = [
        spec.Basic.Publish(exchange=p.exchange, routing_key=p.routing_key, mandatory=p.mandatory),
        ContentHeader(properties=p.properties, body_size=len(p.body)),
        *p.channel._split_body(p.body),
    ]
    return b"".join(pamqp.frame.marshal(frame, p.channel.number) for frame in frames)


def _expect_confirm(p: Publish) -> asyncio.Future[object]:
    """Register the confirm of the publish just numbered, as `basic_publish` does."""
    channel, tag, message_id = p.channel, p.channel.delivery_tag, p.properties.message_id
    assert message_id is not None
    confirmation = channel.create_future()
    channel.confirmations[tag] = confirmation
    channel.message_id_delivery_tag[message_id] = tag
    confirmation.add_done_callback(functools.partial(_forget_message_id, channel, message_id, tag))
    return confirmation


def _forget_message_id(
    channel: aiormq.Channel, message_id: str, tag: int, _: asyncio.Future[object]
) -> None:
    if channel.message_id_delivery_tag.get(message_id) == tag:
        channel.message_id_delivery_tag.pop(message_id)
