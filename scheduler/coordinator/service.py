"""The coordinator process: consumes its queue in batches, one transaction per batch.

Messages that arrive together are handled in one transaction (a savepoint each, so one bad
message does not sink the others); the events they cause are published once it commits,
and only then are the messages acked. If the database is unreachable the batch is retried
in-process with back-off while its messages stay unacked: they count no extra delivery
towards the queue's delivery limit.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.bus import Bus
from common.errors import PoisonMessage
from common.events import Event
from common.topology import coordinator_queue
from scheduler.coordinator.router import Route, parse
from scheduler.coordinator.uow import UnitOfWork

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 5.0


@dataclass
class _Item:
    message: AbstractIncomingMessage
    event: Event
    route: Route


class Coordinator:
    def __init__(
        self,
        bus: Bus,
        sessionmaker: async_sessionmaker[AsyncSession],
        batch_size: int = 100,
    ) -> None:
        self.bus = bus
        self.sessionmaker = sessionmaker
        self.batch_size = batch_size
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def run(self) -> None:
        """Consume until cancelled; unacked messages return to the queue on close."""
        queue = coordinator_queue(self.bus.topology.namespace)
        await self.bus.consume(queue, self._inbox.put, prefetch=max(self.batch_size, 1))
        while True:
            batch = [await self._inbox.get()]
            while len(batch) < self.batch_size and not self._inbox.empty():
                batch.append(self._inbox.get_nowait())
            try:
                await self._handle_batch(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Typically the broker went away mid-batch. The state is committed and the
                # handlers re-emit on redelivery, so handing the messages back is safe.
                log.exception("batch of %d failed; returning it to the queue", len(batch))
                await _requeue(batch)

    async def _handle_batch(self, messages: list[AbstractIncomingMessage]) -> None:
        items: list[_Item] = []
        for message in messages:
            try:
                event, route = parse(message.routing_key or "", message.body)
            except PoisonMessage as exc:
                log.warning("dead-lettering a message on %s: %s", message.routing_key, exc)
                await self.bus.dead_letter(message, str(exc))
                continue
            items.append(_Item(message, event, route))
        if not items:
            return
        delay = 0.1
        while True:
            try:
                outbox, rejected = await self._apply(items)
                break
            except (OperationalError, DBAPIError, OSError) as exc:
                log.warning("state store unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
        await self.bus.publish_many(outbox)
        for item in items:
            reason = rejected.get(id(item))
            if reason is None:
                await item.message.ack()
            else:
                await self.bus.dead_letter(item.message, reason)

    async def _apply(
        self, items: list[_Item]
    ) -> tuple[list[tuple[Event, str | None]], dict[int, str]]:
        outbox: list[tuple[Event, str | None]] = []
        rejected: dict[int, str] = {}
        async with self.sessionmaker() as session, session.begin():
            for item in items:
                uow = UnitOfWork(session)
                try:
                    async with session.begin_nested():
                        await item.route.handler(item.event, uow, item.message.message_id)
                except PoisonMessage as exc:
                    log.warning("dead-lettering %s: %s", type(item.event).__name__, exc)
                    rejected[id(item)] = str(exc)
                    continue
                except (OperationalError, DBAPIError, OSError):
                    raise
                except Exception as exc:
                    # A bug or data the handler cannot take: set aside, never requeue forever.
                    log.exception("handler failed on %s", type(item.event).__name__)
                    rejected[id(item)] = f"handler error: {type(exc).__name__}: {exc}"
                    continue
                outbox.extend(uow.outbox)
        return outbox, rejected


async def _requeue(messages: list[AbstractIncomingMessage]) -> None:
    for message in messages:
        if message.processed:
            continue
        try:
            await message.nack(requeue=True)
        except Exception:  # the channel is gone: the broker requeues them itself
            log.debug("could not nack %s", message.delivery_tag, exc_info=True)
