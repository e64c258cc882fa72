"""The one door to RabbitMQ: declares the topology, publishes with confirms, consumes.

Publishing awaits the broker's confirm, and a publish that no queue takes raises
(`on_return_raises`), so a caller that acks only after `publish` returns never loses an
event. Many publishes in flight on one channel pipeline their confirms.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from common.events import Event
from common.metrics import DEAD_LETTERED
from common.publishing import Publish, publish_together
from common.topology import (
    DELAY_HEADER,
    REASON_HEADER,
    SOURCE_QUEUE_HEADER,
    Topology,
    rung_name,
    topology,
)
from common.tracing import trace_headers

log = logging.getLogger(__name__)

PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)

MessageCallback = Callable[[AbstractIncomingMessage], Awaitable[None]]
AMQP_HEARTBEAT_SECONDS = 15


class Consumer:
    """A running consumer; `cancel()` stops new deliveries and keeps the channel, so
    messages already taken can still be acked; `resume()` starts them again."""

    def __init__(self, queue: AbstractQueue, callback: MessageCallback, tag: str) -> None:
        self.queue = queue
        self.callback = callback
        self.tag: str | None = tag

    async def cancel(self) -> None:
        if self.tag is not None:
            tag, self.tag = self.tag, None
            await self.queue.cancel(tag)

    async def resume(self) -> None:
        if self.tag is None:
            self.tag = await self.queue.consume(self.callback)


@dataclass(frozen=True)
class Outgoing:
    """An event to publish: where to, and after which delay rung, if any."""

    event: Event
    routing_key: str | None = None
    delay_rung: int | None = None
    headers: Mapping[str, str] | None = None
    body: bytes | None = None
    """The event's JSON, when it was encoded already (for its outbox row)."""


class Bus:
    """A connection to the broker for one component. Build it, `await connect()`, use it."""

    def __init__(self, broker_url: str, namespace: str) -> None:
        self.broker_url = broker_url
        self.topology: Topology = topology(namespace)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._dead_exchange: AbstractExchange | None = None
        self._notice_channel: AbstractChannel | None = None
        self._consumer_channels: list[AbstractChannel] = []

    async def connect(self) -> None:
        options: dict[str, Any] = {}
        if "heartbeat=" not in self.broker_url:
            # A hung process (stopped, swapping) stops answering AMQP heartbeats; the broker
            # then closes its connection and requeues what it held. 60 s is the default.
            options["heartbeat"] = AMQP_HEARTBEAT_SECONDS
        self._connection = await aio_pika.connect_robust(self.broker_url, **options)
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        await self._declare(self._channel)
        # Notices (progress, state changes) are best effort: they go out on a channel
        # without publisher confirms, so nobody waits on the broker for them.
        self._notice_channel = await self._connection.channel(publisher_confirms=False)

    async def _declare(self, channel: AbstractChannel) -> None:
        t = self.topology
        self._exchange = await channel.declare_exchange(
            t.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self._dead_exchange = await channel.declare_exchange(
            t.dead_exchange, aio_pika.ExchangeType.FANOUT, durable=True
        )
        for name in (t.dead_queue, t.dead_watch_queue):
            dead = await channel.declare_queue(name, durable=True, arguments=t.arguments(name))
            await dead.bind(self._dead_exchange)
        delay_exchange = await channel.declare_exchange(
            t.delay_exchange, aio_pika.ExchangeType.HEADERS, durable=True
        )
        for rung in t.delays:
            delay = await channel.declare_queue(rung.queue, durable=True, arguments=rung.arguments)
            await delay.bind(delay_exchange, arguments=rung.match)
        for spec in t.queues:
            queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
            for key in spec.bindings:
                await queue.bind(self._exchange, routing_key=key)

    @property
    def connected(self) -> bool:
        return (
            self._connection is not None
            and not self._connection.is_closed
            and self._channel is not None
            and not self._channel.is_closed
        )

    @property
    def exchange(self) -> AbstractExchange:
        if self._exchange is None:
            raise RuntimeError("Bus.connect() was not awaited")
        return self._exchange

    async def publish(
        self,
        event: Event,
        routing_key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        delay_rung: int | None = None,
        body: bytes | None = None,
    ) -> None:
        """Publish and await the broker's confirm (notices, `mandatory=False`, are sent
        without one).

        With `delay_rung` (one of `DELAY_LADDER_SECONDS`) the event waits that long in the
        rung's delay queue, then reaches its routing key's queues.
        """
        await self.publish_many([Outgoing(event, routing_key, delay_rung, headers, body)])

    async def publish_many(self, items: Iterable[Outgoing]) -> None:
        """Publish the events in one write to the broker, and await their confirms
        together. Facts and notices go on different channels: the broker keeps their
        order within each, not between the two."""
        await publish_together([await self._prepared(o) for o in items])

    async def _prepared(self, o: Outgoing) -> Publish:
        event = o.event
        headers: dict[str, Any] = {**trace_headers(), **(o.headers or {})}
        channel, exchange = self._channel, self.topology.exchange
        if not event.mandatory and self._notice_channel is not None:
            channel = self._notice_channel
        if o.delay_rung is not None:
            exchange = self.topology.delay_exchange
            headers[DELAY_HEADER] = rung_name(o.delay_rung)
        if channel is None:
            raise RuntimeError("Bus.connect() was not awaited")
        # Straight to aiormq: aio-pika's `Message` and `Exchange.publish` cost a quarter of
        # a publish, and the coordinator publishes several events per run.
        return Publish(
            channel=cast(aiormq.Channel, await channel.get_underlay_channel()),
            body=o.body if o.body is not None else event.model_dump_json().encode(),
            exchange=exchange,
            routing_key=o.routing_key or event.routing_key,
            properties=aiormq.spec.Basic.Properties(
                content_type="application/json",
                delivery_mode=PERSISTENT,
                message_id=str(event.event_id),
                message_type=type(event).__name__,
                headers=headers,
            ),
            mandatory=event.mandatory,
        )

    async def dead_letter(self, message: AbstractIncomingMessage, reason: str) -> None:
        """Set a message aside on `<ns>.dead` with its reason, then ack it."""
        copy = _persistent_copy(message, dict(message.headers or {}))
        await self._set_aside(copy, message.routing_key or "", reason)
        await message.ack()

    async def pass_on(self, message: AbstractIncomingMessage) -> None:
        """Put a copy of a message at the tail of its queue(s), then ack it: for another
        consumer to take, without the return counting as a failed delivery towards the
        queue's delivery limit (as a `nack` with requeue would)."""
        headers = dict(message.headers or {})
        headers.pop("x-delivery-count", None)
        copy = _persistent_copy(message, headers)
        await self.exchange.publish(copy, routing_key=message.routing_key or "", mandatory=True)
        await message.ack()

    async def dead_letter_event(self, event: Event, reason: str) -> None:
        """Set one event aside on `<ns>.dead` with its reason: one of several a message
        carried (a `JobsDue`), when the others went through."""
        copy = aio_pika.Message(
            event.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=str(event.event_id),
            type=type(event).__name__,
        )
        await self._set_aside(copy, event.routing_key, reason)

    async def _set_aside(self, copy: aio_pika.Message, routing_key: str, reason: str) -> None:
        if self._dead_exchange is None:
            raise RuntimeError("Bus.connect() was not awaited")
        copy.headers[REASON_HEADER] = reason[:1000]
        copy.headers[SOURCE_QUEUE_HEADER] = routing_key
        await self._dead_exchange.publish(copy, routing_key=routing_key)
        DEAD_LETTERED.labels(routing_key).inc()

    async def consume(self, queue_name: str, callback: MessageCallback, prefetch: int) -> Consumer:
        """Consume a declared queue on a channel of its own, with its own prefetch.

        (One channel-wide prefetch for several queues would be neater for a worker, but
        quorum queues refuse global QoS.)
        """
        if self._connection is None:
            raise RuntimeError("Bus.connect() was not awaited")
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        self._consumer_channels.append(channel)
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments=self.topology.arguments(queue_name)
        )
        return Consumer(queue, callback, await queue.consume(callback))

    async def queue_depths(self) -> dict[str, int]:
        """Messages ready in each work queue (a passive declare each)."""
        if self._connection is None:
            raise RuntimeError("Bus.connect() was not awaited")
        depths: dict[str, int] = {}
        async with self._connection.channel() as channel:
            for spec in self.topology.queues:
                queue = await channel.declare_queue(spec.name, passive=True)
                depths[spec.name] = queue.declaration_result.message_count or 0
        return depths

    async def declare_private_queue(self, bindings: Iterable[str]) -> AbstractQueue:
        """A server-named queue that lives as long as this connection (change notices)."""
        if self._connection is None:
            raise RuntimeError("Bus.connect() was not awaited")
        channel = await self._connection.channel()
        self._consumer_channels.append(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        exchange = await channel.get_exchange(self.topology.exchange)
        for key in bindings:
            await queue.bind(exchange, routing_key=key)
        return queue

    async def stop_consuming(self) -> None:
        """Close consumer channels: messages not yet acked go back to their queues."""
        for channel in self._consumer_channels:
            if not channel.is_closed:
                await channel.close()
        self._consumer_channels.clear()

    async def close(self) -> None:
        await self.stop_consuming()
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()
        self._connection = None


async def connect_bus(broker_url: str, namespace: str) -> Bus:
    bus = Bus(broker_url, namespace)
    await bus.connect()
    return bus


async def delete_namespace(broker_url: str, namespace: str) -> None:
    """Delete every queue and exchange of a namespace (test runs, benchmarks, teardown)."""
    connection = await aio_pika.connect(broker_url)
    try:
        channel = await connection.channel()
        t = topology(namespace)
        for name in t.all_queues():
            await channel.queue_delete(name)
        for name in t.all_exchanges():
            await channel.exchange_delete(name)
    finally:
        await connection.close()


def _persistent_copy(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A message to publish again: the delivered one's body, id and type, with `headers`."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        type=message.type,
    )
