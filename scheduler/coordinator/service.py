"""The coordinator process: consumes its queue in batches, one transaction per batch.

Messages that arrive together are handled in one transaction: their rows are read in a
few queries and written in one flush, and if one message fails the batch is handled again
with a savepoint per message, so one bad message does not sink the others. The handlers
are synchronous; the transaction runs in one hop to a thread on SQLite (see
`common.db.transactions`). The events they cause are stored in the outbox in the
same transaction, published once it commits, and only then are the messages acked. If the
database is unreachable the batch is retried in-process with back-off while its messages
stay unacked: they count no extra delivery towards the queue's delivery limit.

Beside the batches it keeps the worker registry honest (lost workers), fails the tasks
whose messages were dead-lettered, and relays outbox rows a crash left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import Connection, select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from common.bus import Bus, Outgoing
from common.db.models import JobRun, table_of
from common.db.transactions import Transactor
from common.errors import PoisonMessage
from common.events import Event, RunFinished, StateChanged, TaskDispatched, WorkerHeartbeat
from common.logs import log_context
from common.metrics import (
    HEARTBEATS,
    QUEUE_MESSAGES,
    RETRIES_SCHEDULED,
    RUNS_FINISHED,
    RUNS_STARTED,
    WORKERS_LOST,
)
from common.staging import StagingArea
from common.states import FINAL_RUN_STATUSES, RunStatus
from common.topology import coordinator_queue, dead_watch_queue
from common.tracing import consuming
from scheduler.coordinator import outbox
from scheduler.coordinator.dead_letters import on_dead_letter
from scheduler.coordinator.preload import preload
from scheduler.coordinator.router import Route, parse
from scheduler.coordinator.uow import ConfigSealer, UnitOfWork
from scheduler.coordinator.workers import mark_lost_workers

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BACKOFF_SECONDS = 5.0
CLEANUP_INTERVAL_SECONDS = 600.0
DB_ERRORS = (OperationalError, DBAPIError, OSError)
MAX_BATCHES_IN_FLIGHT = 4
"""Committed batches whose events may await their confirms while the next is handled."""


@dataclass(frozen=True)
class CoordinatorConfig:
    batch_size: int = 100
    heartbeat_seconds: float = 5.0
    lost_after_heartbeats: int = 3
    outbox_relay_seconds: float = 10.0
    seal: ConfigSealer | None = None
    load_after_extract: bool = True
    staging: StagingArea | None = None
    staging_retention_seconds: float = 24 * 3600.0


class _OneByOne(Exception):
    """A batch needs handling message by message (a handler failed, or a row was refused)."""


@dataclass
class _Item:
    message: AbstractIncomingMessage
    event: Event
    route: Route[Any]
    shared: bool = False
    """The message carries other events too (a `JobsDue`): it is acked once all are
    handled, and one of them refused is set aside alone."""


class Coordinator:
    def __init__(
        self,
        bus: Bus,
        transactor: Transactor,
        config: CoordinatorConfig | None = None,
    ) -> None:
        self.bus = bus
        self.transactor = transactor
        """Runs every transaction (in one thread hop on SQLite). Nothing here goes through
        aiosqlite, whose calls must not be cancelled mid-way (`common.aio`)."""
        self.config = config or CoordinatorConfig()
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._silence_seconds = self.config.heartbeat_seconds * self.config.lost_after_heartbeats
        # Heartbeats that piled up while this coordinator (or its database) was away are
        # still queued: judge no worker lost until they have had a window to arrive.
        self._quiet_until = time.monotonic() + self._silence_seconds
        self._confirmed: list[uuid.UUID] = []
        """Outbox rows whose publish was confirmed; deleted a batch at a time, or by
        maintenance when the coordinator is idle."""
        self._sending: set[asyncio.Task[None]] = set()
        self._sending_slots = asyncio.Semaphore(MAX_BATCHES_IN_FLIGHT)
        self._last_settle: asyncio.Task[None] | None = None
        """The settling of the batch handled last: the next one acks after it."""

    async def run(self) -> None:
        """Consume until cancelled; unacked messages return to the queue on close."""
        ns = self.bus.topology.namespace
        await self.bus.consume(
            coordinator_queue(ns), self._inbox.put, prefetch=max(self.config.batch_size, 1) * 2
        )
        await self.bus.consume(dead_watch_queue(ns), self._on_dead_letter, prefetch=20)
        maintenance = asyncio.create_task(self._maintain())
        try:
            while True:
                batch = [await self._inbox.get()]
                while len(batch) < self.config.batch_size and not self._inbox.empty():
                    batch.append(self._inbox.get_nowait())
                try:
                    await self._handle_batch(batch)
                except Exception:
                    log.exception("batch of %d failed; returning it to the queue", len(batch))
                    await _requeue(batch)
        finally:
            maintenance.cancel()
            for task in list(self._sending):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance

    async def _commit(self, work: Callable[[UnitOfWork], T]) -> tuple[T, UnitOfWork]:
        """Run `work` in one transaction, retried while the database is unreachable.

        What it emitted goes to the outbox in the same transaction; outbox rows whose
        publish was confirmed are deleted in it too, once there are a batch of them.
        """
        delay = 0.1
        while True:
            # A delete statement per batch would be a fifth of a small batch's work:
            # confirmed rows wait for a full batch of them, or for maintenance.
            if work is _nothing or len(self._confirmed) >= self.config.batch_size:
                confirmed, self._confirmed = self._confirmed, []
            else:
                confirmed = []
            try:
                return await self.transactor.run(
                    functools.partial(self._transaction, work, confirmed)
                )
            except DB_ERRORS as exc:
                self._confirmed.extend(confirmed)
                self._quiet_until = time.monotonic() + self._silence_seconds
                log.warning("state store unavailable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_SECONDS)
            except BaseException:
                self._confirmed.extend(confirmed)
                raise

    def _transaction(
        self, work: Callable[[UnitOfWork], T], confirmed: list[uuid.UUID], conn: Connection
    ) -> tuple[T, UnitOfWork]:
        uow = UnitOfWork(conn, load_after_extract=self.config.load_after_extract)
        if self.config.seal is not None:
            uow.seal = self.config.seal
        result = work(uow)
        uow.flush()
        uow.outbox[:] = outbox.store(conn, uow.outbox)
        outbox.delete_rows(conn, confirmed)
        return result, uow

    async def _publish(self, uow: UnitOfWork) -> None:
        """Publish what a committed unit emitted; its outbox rows go with the next commit."""
        await self.bus.publish_many(uow.to_publish())
        count_outcomes(uow.outbox)
        self._confirmed.extend(o.event.event_id for o in uow.outbox if o.event.outboxed)

    async def _transact(self, work: Callable[[UnitOfWork], T]) -> T:
        result, uow = await self._commit(work)
        await self._publish(uow)
        return result

    async def _handle_batch(self, messages: list[AbstractIncomingMessage]) -> None:
        carried: list[list[_Item]] = []
        for message in messages:
            try:
                parts = parse(message.routing_key or "", message.body)
            except PoisonMessage as exc:
                log.warning("dead-lettering a message on %s: %s", message.routing_key, exc)
                await self.bus.dead_letter(message, str(exc))
                continue
            shared = len(parts) > 1
            carried.append([_Item(message, event, route, shared) for event, route in parts])
        for items in _transactions(carried, self.config.batch_size):
            await self._handle_items(items)

    async def _handle_items(self, items: list[_Item]) -> None:
        try:
            rejected, uow = await self._commit(lambda uow: self._apply_fast(items, uow))
        except _OneByOne:
            rejected, uow = await self._commit(lambda uow: self._apply_careful(items, uow))
        # The next batch is handled while this one's events wait for their confirms:
        # its messages are acked only once they are confirmed, so nothing is lost if the
        # broker goes away, and the redelivered messages find their effects committed.
        await self._sending_slots.acquire()
        sending = asyncio.create_task(self._settle(items, uow, rejected, self._last_settle))
        self._last_settle = sending
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def _settle(
        self,
        items: list[_Item],
        uow: UnitOfWork,
        rejected: dict[int, str],
        previous: asyncio.Task[None] | None,
    ) -> None:
        try:
            await self._publish(uow)
            handled: dict[int, AbstractIncomingMessage] = {}
            for item in items:
                reason = rejected.get(id(item))
                if item.shared:
                    handled[id(item.message)] = item.message
                    if reason is not None:
                        await self.bus.dead_letter_event(item.event, reason)
                elif reason is None:
                    if isinstance(item.event, WorkerHeartbeat):
                        HEARTBEATS.inc()
                    handled[id(item.message)] = item.message
                else:
                    await self.bus.dead_letter(item.message, reason)
            if previous is not None:
                await asyncio.wait([previous])
            await _ack_together(list(handled.values()))
        except Exception:
            # Typically the broker went away. The state and its outbox are committed (the
            # relay sends the events), so handing the messages back is safe.
            log.exception("batch of %d not settled; returning it to the queue", len(items))
            await _requeue([item.message for item in items])
        finally:
            self._sending_slots.release()

    def _apply_fast(self, items: list[_Item], uow: UnitOfWork) -> dict[int, str]:
        """The whole batch without savepoints, its rows read up front and written at
        once. Any handler error sends the batch to `_apply_careful` instead."""
        preload(uow, [(item.event, item.message.message_id) for item in items])
        for item in items:
            try:
                with self._observed(item, uow):
                    item.route.handle(item.event, uow, item.message.message_id)
            except DB_ERRORS:
                raise
            except Exception as exc:
                raise _OneByOne from exc
        try:
            uow.flush()
        except IntegrityError as exc:
            raise _OneByOne from exc
        return {}

    def _apply_careful(self, items: list[_Item], uow: UnitOfWork) -> dict[int, str]:
        """One savepoint per message, so a bad one is set aside and the rest commit."""
        rejected: dict[int, str] = {}
        for item in items:
            mark = len(uow.outbox)
            try:
                with self._observed(item, uow), uow.conn.begin_nested():
                    item.route.handle(item.event, uow, item.message.message_id)
                    uow.flush()
            except IntegrityError as exc:
                rejected[id(item)] = f"state store refused it: {exc.orig!r}"
                del uow.outbox[mark:]
                uow.forget()
            except DB_ERRORS:
                raise
            except Exception as exc:
                uow.forget()
                # Poison or a bug: set aside with its reason, never requeued forever.
                if not isinstance(exc, PoisonMessage):
                    log.exception("handler failed on %s", type(item.event).__name__)
                reason = str(exc) if isinstance(exc, PoisonMessage) else f"handler error: {exc!r}"
                log.warning("dead-lettering %s: %s", type(item.event).__name__, reason)
                rejected[id(item)] = reason
                del uow.outbox[mark:]
        return rejected

    @staticmethod
    @contextlib.contextmanager
    def _observed(item: _Item, uow: UnitOfWork) -> Iterator[None]:
        fields = _fields(item.event)
        name = f"coordinator {type(item.event).__name__}"
        with log_context(**fields), consuming(name, item.message.headers, **fields):
            yield

    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        def work(uow: UnitOfWork) -> None:
            on_dead_letter(
                message.body, message.routing_key or "", dict(message.headers or {}), uow
            )

        try:
            await self._transact(work)
            await message.ack()
        except Exception:
            log.exception("dead letter not processed; returning it")
            await _requeue([message])

    async def _maintain(self) -> None:
        silence = timedelta(
            seconds=self.config.heartbeat_seconds * self.config.lost_after_heartbeats
        )
        relay_age = timedelta(seconds=self.config.outbox_relay_seconds)
        pause = min(self.config.heartbeat_seconds, self.config.outbox_relay_seconds) / 2
        next_cleanup = time.monotonic()
        while True:
            try:
                if time.monotonic() >= self._quiet_until:
                    lost = await self._transact(lambda uow: mark_lost_workers(uow, silence))
                    WORKERS_LOST.inc(len(lost))
                if self._confirmed:
                    await self._transact(_nothing)
                await outbox.relay(self.bus, self.transactor, relay_age)
                depths = await self.bus.queue_depths()
                for queue, depth in depths.items():
                    QUEUE_MESSAGES.labels(queue).set(depth)
                if (
                    depths.get(coordinator_queue(self.bus.topology.namespace), 0)
                    > self.config.batch_size
                ):
                    # Heartbeats queue behind the backlog like any message: a worker is
                    # not silent, it is waiting its turn. Judge none lost until it drains.
                    self._quiet_until = time.monotonic() + self._silence_seconds
                if time.monotonic() >= next_cleanup:
                    next_cleanup = time.monotonic() + CLEANUP_INTERVAL_SECONDS
                    await self._clean_staging()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("maintenance round failed")
            await asyncio.sleep(pause)

    async def _clean_staging(self) -> None:
        """Delete staged files of finished runs older than the retention period."""
        staging = self.config.staging
        if staging is None:
            return
        active = await self.transactor.run(_active_runs)
        age = timedelta(seconds=self.config.staging_retention_seconds)
        removed = await asyncio.to_thread(staging.remove_older_than, age, active)
        if removed:
            log.info("removed staged files of %d finished runs", len(removed))


def _transactions(carried: list[list[_Item]], size: int) -> Iterator[list[_Item]]:
    """The items in groups of about `size`, one transaction each; a message's items stay
    in one group, since the message is acked once its group commits."""
    group: list[_Item] = []
    for items in carried:
        if group and len(group) + len(items) > size:
            yield group
            group = []
        group.extend(items)
    if group:
        yield group


def _active_runs(conn: Connection) -> set[uuid.UUID]:
    """Runs not final yet: their staged files are still needed."""
    runs = table_of(JobRun)
    query = select(runs.c.id).where(runs.c.status.not_in(FINAL_RUN_STATUSES))
    return set(conn.execute(query).scalars())


def _nothing(uow: UnitOfWork) -> None:
    """A transaction that only deletes the confirmed outbox rows (when no batch comes)."""


def _fields(event: Event) -> dict[str, Any]:
    # From the model's `__dict__`, which holds its fields: `getattr` with a default on a
    # field the event lacks goes through pydantic's `__getattr__` and an exception.
    values = vars(event)
    return {
        "job": values.get("job_definition_id"),
        "run_id": values.get("run_id"),
        "task_id": values.get("task_id"),
        "attempt": values.get("attempt"),
    }


def count_outcomes(sent: list[Outgoing]) -> None:
    """Metrics of committed transitions, read off the events they caused."""
    for o in sent:
        e = o.event
        if isinstance(e, StateChanged) and e.task_id is None and e.run_status is RunStatus.PENDING:
            RUNS_STARTED.labels(str(e.job_definition_id)).inc()
        elif isinstance(e, RunFinished):
            RUNS_FINISHED.labels(str(e.job_definition_id), e.status.value).inc()
        elif isinstance(e, TaskDispatched) and o.delay_rung is not None:
            RETRIES_SCHEDULED.labels(e.task_type.value, str(o.delay_rung)).inc()


async def _ack_together(messages: list[AbstractIncomingMessage]) -> None:
    """Ack a committed batch's messages with one `multiple` ack of the last delivered.

    It also acks every earlier delivery still unsettled on the channel, which are this
    batch's own: batches are handled in delivery order, each acks only once the one
    before has settled, and a message set aside alone was acked (or handed back) before.
    One ack instead of one a message is less work for the broker and for this process.
    """
    unsettled = [m for m in messages if not m.processed]
    if unsettled:
        await max(unsettled, key=lambda m: m.delivery_tag or 0).ack(multiple=True)


async def _requeue(messages: list[AbstractIncomingMessage]) -> None:
    for message in messages:
        if message.processed:
            continue
        try:
            await message.nack(requeue=True)
        except Exception:  # the channel is gone: the broker requeues them itself
            log.debug("could not nack %s", message.delivery_tag, exc_info=True)


__all__ = ["Coordinator", "CoordinatorConfig", "Outgoing"]
