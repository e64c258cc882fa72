"""Live status: the run-coordinator's and workers' notices, fanned out to event streams.

One `LiveHub` per API process holds one private queue on `<ns>.events`, bound to
`state.changes` (the runs' and tasks' status changes of one committed transaction),
`task.progress` (rows so far) and `run.finished` while at least one stream is open (and
`LINGER_SECONDS` after the last one closed), and hands every notice to the streams that
subscribed. Unbound, the broker drops the notices instead of delivering several per run
to a process that would only discard them. A stream subscribes, and the queue is bound,
*before* it reads the current state from the database, so no change is lost between the
two: the coordinator publishes a notice only after its commit, so a notice the stream
missed is already in what it reads. Notices queued before that read and older than it
are dropped, so a client never sees a status go back.

A stream that falls too far behind (`MAX_BACKLOG` notices) is ended with an `error`
event; the client reconnects and starts from a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from litestar.response import ServerSentEventMessage
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.schemas import ActiveRuns, RunOut, RunSnapshot, TaskOut
from common.aio import finish_first, wait_or_timeout
from common.bus import Bus
from common.db.models import JobRun, Task
from common.events import Event, RunFinished, StateChanged, StateChanges, TaskProgress
from common.states import FINAL_RUN_STATUSES, FINAL_TASK_STATUSES, RunStatus, TaskStatus

log = logging.getLogger(__name__)

T = TypeVar("T")

LiveEvent: TypeAlias = StateChanged | TaskProgress | RunFinished
_MODELS: dict[str, type[StateChanges | TaskProgress | RunFinished]] = {
    m.routing_key: m for m in (StateChanges, TaskProgress, RunFinished)
}
STREAM_KEYS = tuple(_MODELS)

LINGER_SECONDS = 60.0
"""The notices stay bound this long after the last stream closed: a client that reconnects
(`orc runs follow`, a browser) finds them flowing without a bind each time."""
KEEPALIVE_SECONDS = 15.0
"""A stream with nothing to say sends a comment this often, and re-reads its run's status."""
MAX_BACKLOG = 10_000
"""Notices a stream may have waiting before it is ended as too slow."""
ACTIVE_RUNS_LIMIT = 1000
"""Runs in progress `GET /events` describes in its first event, at most."""
_KNOWN_RUNS = 100_000

SSE_NAMES: dict[type[Event], str] = {
    StateChanged: "state",
    TaskProgress: "progress",
    RunFinished: "finished",
}

STREAM_DESCRIPTION = """Server-Sent Events (`text/event-stream`). Each event has a name and
JSON data:

- `snapshot`: the current state, sent first: for a run a `RunSnapshot`, for `/events` an
  `ActiveRuns`.
- `state`: a run's or task's status changed (the bus event `StateChanged`).
- `progress`: rows a task has handled so far (the bus event `TaskProgress`).
- `finished`: the run ended COMPLETED, FAILED or CANCELLED (the bus event `RunFinished`);
  a run's stream then ends.
- `error`: the stream ends early (the client fell behind, or the run was deleted);
  reconnect to start from a fresh snapshot.

Comments (`: keep-alive`) are sent every 15 s while nothing happens. A notice that
repeats a state the snapshot already shows may follow the snapshot; apply events as
"the current state of X is Y"."""


class _Closed:
    """Put into a subscription when the hub shuts down."""


_CLOSED = _Closed()


@dataclass(eq=False)
class Subscription:
    """One stream's inbox."""

    max_backlog: int = MAX_BACKLOG
    overflowed: bool = False
    inbox: asyncio.Queue[LiveEvent | _Closed] = field(default_factory=asyncio.Queue)

    def offer(self, event: LiveEvent) -> None:
        if self.inbox.qsize() >= self.max_backlog:
            self.overflowed = True
            return
        self.inbox.put_nowait(event)

    def close(self) -> None:
        self.inbox.put_nowait(_CLOSED)

    def backlog(self) -> int:
        return self.inbox.qsize()

    async def next(self, wait_seconds: float) -> LiveEvent | _Closed | None:
        """The next notice; None when none came within `wait_seconds`."""
        return await wait_or_timeout(self.inbox.get(), wait_seconds)


class LiveHub:
    """The API process's one subscription to the live notices, shared by its streams."""

    def __init__(
        self, keepalive_seconds: float = KEEPALIVE_SECONDS, linger_seconds: float = LINGER_SECONDS
    ) -> None:
        self.keepalive_seconds = keepalive_seconds
        self.linger_seconds = linger_seconds
        self._subscriptions: set[Subscription] = set()
        self._job_of_run: OrderedDict[uuid.UUID, uuid.UUID] = OrderedDict()
        self._closed = False
        self._queue: AbstractQueue | None = None
        self._exchange = ""
        self._bound = False
        self._binding = asyncio.Lock()
        self._unbind_later: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, bus: Bus) -> None:
        """Declare the hub's queue and consume it; it is bound on the first subscription."""
        self._queue = await bus.declare_private_queue(())
        self._exchange = bus.topology.exchange
        await self._queue.consume(self._on_message, no_ack=True)

    @property
    def listening(self) -> bool:
        """The notices are bound to the hub's queue."""
        return self._bound

    async def _listen(self) -> None:
        if self._unbind_later is not None:
            self._unbind_later.cancel()
            self._unbind_later = None
        async with self._binding:
            if self._queue is None or self._bound:
                return
            for key in STREAM_KEYS:
                await self._queue.bind(self._exchange, routing_key=key)
            self._bound = True

    def _quiet_later(self) -> None:
        if self._queue is None or self._unbind_later is not None:
            return
        self._unbind_later = asyncio.get_running_loop().call_later(
            self.linger_seconds, self._start_quiet
        )

    def _start_quiet(self) -> None:
        self._unbind_later = None
        task = asyncio.get_running_loop().create_task(self.quiet())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def quiet(self) -> None:
        """Unbind the notices now if no stream is open (done `linger_seconds` after the
        last one closed)."""
        async with self._binding:
            if self._queue is None or not self._bound or self._subscriptions:
                return
            try:
                for key in STREAM_KEYS:
                    await self._queue.unbind(self._exchange, routing_key=key)
                self._bound = False
            except Exception:
                # Bound stays true: notices keep arriving and are dropped unparsed.
                log.warning("could not unbind the live notices", exc_info=True)

    def close(self) -> None:
        """End every stream (the server is stopping; open streams would hold it up)."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.close()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        """A stream's subscription; once entered, every notice published reaches it."""
        subscription = Subscription()
        if self._closed:
            subscription.close()
        self._subscriptions.add(subscription)
        try:
            await self._listen()
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            if not self._subscriptions:
                self._quiet_later()

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def remember(self, run_id: uuid.UUID, job_id: uuid.UUID) -> None:
        self._job_of_run[run_id] = job_id
        self._job_of_run.move_to_end(run_id)
        while len(self._job_of_run) > _KNOWN_RUNS:
            self._job_of_run.popitem(last=False)

    def job_of(self, run_id: uuid.UUID) -> uuid.UUID | None:
        return self._job_of_run.get(run_id)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        model = _MODELS.get(message.routing_key or "")
        if model is None or not self._subscriptions:
            # Nobody is streaming: parsing every notice would cost the process as much as
            # a busy coordinator's own work. A later stream's job filter asks the store.
            return
        try:
            event = model.model_validate_json(message.body)
        except ValidationError:
            log.warning("ignoring a malformed %s notice", message.routing_key, exc_info=True)
            return
        if isinstance(event, StateChanges):
            for change in event.changes:
                self.deliver(change)
        else:
            self.deliver(event)

    def deliver(self, event: LiveEvent) -> None:
        if isinstance(event, StateChanged | RunFinished):
            self.remember(event.run_id, event.job_definition_id)
        for subscription in self._subscriptions:
            subscription.offer(event)


def _message(event: LiveEvent) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        event=SSE_NAMES[type(event)], data=event.model_dump_json(), id=str(event.event_id)
    )


def _error(detail: str) -> ServerSentEventMessage:
    return ServerSentEventMessage(event="error", data=json.dumps({"detail": detail}))


_KEEPALIVE = ServerSentEventMessage(data=None, comment="keep-alive")

_RUN_RANK = {RunStatus.PENDING: 0, RunStatus.RUNNING: 1}
_TASK_RANK = {TaskStatus.PENDING: 0, TaskStatus.RUNNING: 1, TaskStatus.RETRYING: 2}


def _run_rank(status: RunStatus) -> int:
    return _RUN_RANK.get(status, 2)


def _task_rank(attempt: int, status: TaskStatus) -> tuple[int, int]:
    return (attempt, _TASK_RANK.get(status, 3))


def is_stale(event: LiveEvent, snapshot: RunSnapshot) -> bool:
    """Whether a notice queued before `snapshot` was read shows nothing newer than it."""
    if isinstance(event, RunFinished):
        return False
    tasks = {t.id: t for t in snapshot.tasks}
    task = tasks.get(event.task_id) if event.task_id is not None else None
    if isinstance(event, TaskProgress):
        return task is not None and (
            task.status in FINAL_TASK_STATUSES or event.attempt < task.attempt_count
        )
    if _run_rank(event.run_status) > _run_rank(snapshot.run.status):
        return False
    if event.task_id is None or event.task_status is None:
        return True
    if task is None:
        return False  # a task the snapshot does not show yet
    return _task_rank(event.attempt or 0, event.task_status) <= _task_rank(
        task.attempt_count, task.status
    )


async def read_snapshot(session: AsyncSession, run_id: uuid.UUID) -> RunSnapshot | None:
    run = await session.get(JobRun, run_id)
    if run is None:
        return None
    tasks = (
        await session.scalars(
            select(Task).where(Task.job_run_id == run_id).order_by(Task.created_at, Task.id)
        )
    ).all()
    return RunSnapshot(
        run=RunOut.model_validate(run), tasks=[TaskOut.model_validate(t) for t in tasks]
    )


async def read_active(session: AsyncSession, job_id: uuid.UUID | None) -> list[RunSnapshot]:
    statement = (
        select(JobRun)
        .where(JobRun.status.in_([RunStatus.PENDING, RunStatus.RUNNING]))
        .order_by(JobRun.created_at.desc(), JobRun.id.desc())
        .limit(ACTIVE_RUNS_LIMIT)
    )
    if job_id is not None:
        statement = statement.where(JobRun.job_definition_id == job_id)
    runs = (await session.scalars(statement)).all()
    if not runs:
        return []
    tasks = (
        await session.scalars(
            select(Task)
            .where(Task.job_run_id.in_([r.id for r in runs]))
            .order_by(Task.created_at, Task.id)
        )
    ).all()
    by_run: dict[uuid.UUID, list[TaskOut]] = {}
    for task in tasks:
        by_run.setdefault(task.job_run_id, []).append(TaskOut.model_validate(task))
    return [RunSnapshot(run=RunOut.model_validate(r), tasks=by_run.get(r.id, [])) for r in runs]


def _finished_from(snapshot: RunSnapshot) -> RunFinished:
    """The `finished` event of a run that ended before (or without) its notice arrived."""
    run = snapshot.run
    return RunFinished(
        run_id=run.id,
        job_definition_id=run.job_definition_id,
        status=run.status,
        error_message=run.error_message,
    )


async def _read(
    sessionmaker: async_sessionmaker[AsyncSession],
    read: Callable[[AsyncSession], Awaitable[T]],
) -> T:
    """`read` in a session of its own, finished before a cancellation takes effect: a
    stream's task is cancelled when its client leaves, and an aiosqlite read cut mid-way
    can hang its task for good (`common.aio`)."""

    async def in_session() -> T:
        async with sessionmaker() as session:
            return await read(session)

    return await finish_first(in_session())


async def run_events(
    hub: LiveHub, sessionmaker: async_sessionmaker[AsyncSession], run_id: uuid.UUID
) -> AsyncIterator[ServerSentEventMessage]:
    """A run's stream: its snapshot, then its notices until it finishes."""
    async with hub.subscribe() as subscription:
        snapshot = await _read(sessionmaker, lambda session: read_snapshot(session, run_id))
        if snapshot is None:
            yield _error("the run no longer exists")
            return
        yield ServerSentEventMessage(event="snapshot", data=snapshot.model_dump_json())
        if snapshot.run.status in FINAL_RUN_STATUSES:
            yield _message(_finished_from(snapshot))
            return
        older = subscription.backlog()
        while True:
            item = await subscription.next(hub.keepalive_seconds)
            if subscription.overflowed:
                yield _error("the stream fell behind; reconnect")
                return
            if isinstance(item, _Closed):
                return
            if item is None:
                yield _KEEPALIVE
                # The notice of the run's end is not mandatory: if it never comes, the
                # stored status still ends the stream.
                now = await _read(sessionmaker, lambda session: read_snapshot(session, run_id))
                if now is None:
                    yield _error("the run no longer exists")
                    return
                if now.run.status in FINAL_RUN_STATUSES:
                    yield _message(_finished_from(now))
                    return
                continue
            is_older = older > 0
            older -= 1
            if item.run_id != run_id or (is_older and is_stale(item, snapshot)):
                continue
            yield _message(item)
            if isinstance(item, RunFinished):
                return


async def _job_of(
    hub: LiveHub, sessionmaker: async_sessionmaker[AsyncSession], event: LiveEvent
) -> uuid.UUID | None:
    if not isinstance(event, TaskProgress):
        return event.job_definition_id
    known = hub.job_of(event.run_id)
    if known is None:
        query = select(JobRun.job_definition_id).where(JobRun.id == event.run_id)
        known = await _read(sessionmaker, lambda session: session.scalar(query))
        if known is not None:
            hub.remember(event.run_id, known)
    return known


async def all_events(
    hub: LiveHub, sessionmaker: async_sessionmaker[AsyncSession], job_id: uuid.UUID | None
) -> AsyncIterator[ServerSentEventMessage]:
    """Every run's notices (of one job, if given), after a snapshot of the runs in progress.

    Ends only when the client leaves or the server stops.
    """
    async with hub.subscribe() as subscription:
        active = await _read(sessionmaker, lambda session: read_active(session, job_id))
        yield ServerSentEventMessage(
            event="snapshot", data=ActiveRuns(runs=active).model_dump_json()
        )
        snapshots = {s.run.id: s for s in active}
        older = subscription.backlog()
        while True:
            item = await subscription.next(hub.keepalive_seconds)
            if subscription.overflowed:
                yield _error("the stream fell behind; reconnect")
                return
            if isinstance(item, _Closed):
                return
            if item is None:
                yield _KEEPALIVE
                continue
            is_older = older > 0
            older -= 1
            if job_id is not None and await _job_of(hub, sessionmaker, item) != job_id:
                continue
            snapshot = snapshots.get(item.run_id)
            if is_older and snapshot is not None and is_stale(item, snapshot):
                continue
            yield _message(item)
