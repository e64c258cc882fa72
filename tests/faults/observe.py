"""A recorder of everything published on a namespace's events exchange.

It is bound to `#` before anything happens, so scenarios await what they need (a worker's
first heartbeat, a task's progress, every run finished) instead of sleeping, and afterwards
read the whole history (attempts, back-off gaps, duplicates).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aio_pika.abc import AbstractIncomingMessage

from common.bus import Bus
from common.events import (
    EVENTS_BY_ROUTING_KEY,
    Event,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
    WorkerHeartbeat,
    unfolded,
)
from common.ids import task_id
from common.states import TaskType
from common.topology import task_routing_key

E = TypeVar("E", bound=Event)

_MODELS: dict[str, type[Event]] = {
    **EVENTS_BY_ROUTING_KEY,
    **{task_routing_key(t): TaskDispatched for t in TaskType},
}


@dataclass(frozen=True)
class Seen:
    event: Event
    routing_key: str
    at: float
    """`time.monotonic()` when the recorder received it."""


class Recorder:
    """Every event of the namespace, in arrival order (bodies that are no event: counted)."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.unparsed = 0
        self._bell = asyncio.Event()

    async def start(self, bus: Bus) -> None:
        queue = await bus.declare_private_queue(["#"])
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        key = message.routing_key or ""
        model = _MODELS.get(key)
        try:
            event = model.model_validate_json(message.body) if model else None
        except ValueError:
            event = None
        if event is None:
            self.unparsed += 1
        else:
            at = time.monotonic()
            self.seen.extend(Seen(one, key, at) for one in unfolded(event))
        self._bell.set()

    def of(self, model: type[E], **match: Any) -> list[E]:
        """Events of this type whose fields equal `match`, in arrival order."""
        return [
            s.event
            for s in self.seen
            if isinstance(s.event, model)
            and all(getattr(s.event, k) == v for k, v in match.items())
        ]

    async def wait_for(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Wait until `condition()` holds, re-checked at every event; False on timeout."""
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._bell.clear()
            try:
                await asyncio.wait_for(self._bell.wait(), left)
            except TimeoutError:
                return condition()
        return True

    async def expect(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        if not await self.wait_for(condition, timeout):
            raise AssertionError(f"not seen within {timeout:g}s: {what}")

    async def next_of(self, model: type[Event], timeout: float) -> None:
        """Return at the next event of this type, or after `timeout`."""
        count = len(self.of(model))
        await self.wait_for(lambda: len(self.of(model)) > count, timeout)

    def worker_ids(self, pid: int) -> set[str]:
        """The ids of the worker running in process `pid` (its id is `host:pid:random`)."""
        return {
            hb.worker_id
            for hb in self.of(WorkerHeartbeat)
            if hb.worker_id.rsplit(":", 2)[-2:-1] == [str(pid)]
        }

    def in_flight(self, worker_id: str | None = None) -> set[tuple[uuid.UUID, int]]:
        """Attempts the worker (any worker) started and no one reported an outcome of yet."""
        match = {} if worker_id is None else {"worker_id": worker_id}
        started = {(s.task_id, s.attempt) for s in self.of(TaskStarted, **match)}
        ended = {(o.task_id, o.attempt) for o in self.of(TaskSucceeded)} | {
            (o.task_id, o.attempt) for o in self.of(TaskFailed)
        }
        return started - ended

    def starts(self, task_id: uuid.UUID) -> list[TaskStarted]:
        return self.of(TaskStarted, task_id=task_id)

    def history(self, run_id: uuid.UUID, names: dict[str, str], since: float) -> list[str]:
        """A run's events, one line each, for a failure message."""
        tasks = {task_id(run_id, t): t.value for t in TaskType}
        lines = []
        for s in self.seen:
            event = s.event
            if getattr(event, "run_id", None) != run_id:
                continue
            what = [f"{s.at - since:7.2f}s", type(event).__name__]
            for name in ("task_id", "attempt", "worker_id", "status", "task_status", "error"):
                value = getattr(event, name, None)
                if value is None:
                    continue
                if name == "task_id":
                    value = tasks.get(value, value)
                elif name == "worker_id":
                    value = names.get(value, value)
                elif name == "error":
                    value = repr(value[:120])
                what.append(f"{name}={value}")
            lines.append(" ".join(what))
        return lines
