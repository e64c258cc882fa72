"""A unit of work: one database session plus the events to publish once it commits.

A batch's rows are read up front in a few `IN (...)` queries (`scheduler.coordinator.
preload`); the handlers then find them with `get()` without a round trip to the database
each, and `add()` makes a new row findable before it is flushed. Everything is flushed
once, at commit, so rows of one table are written together.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from common.bus import Outgoing
from common.db.models import Base, JobState
from common.events import Event, StateChanged, StateChanges, utcnow
from common.states import TaskType
from common.tracing import trace_headers

ConfigSealer = Callable[[TaskType, str, dict[str, Any]], dict[str, Any]]
M = TypeVar("M", bound=Base)


def _as_is(task_type: TaskType, plugin: str, config: dict[str, Any]) -> dict[str, Any]:
    return config


@dataclass
class UnitOfWork:
    session: AsyncSession
    now: datetime = field(default_factory=utcnow)
    outbox: list[Outgoing] = field(default_factory=list)
    seal: ConfigSealer = _as_is
    """Turns a plugin config into what may ride the bus (secret values encrypted)."""
    absent: set[tuple[type[Base], Any]] = field(default_factory=set)
    """Keys the preload looked for and did not find: `get()` answers None without a query."""
    locked_runs: set[uuid.UUID] = field(default_factory=set)
    """Runs the preload read `FOR UPDATE` (in id order, so batches cannot deadlock)."""
    job_states: dict[uuid.UUID, dict[str, JobState]] = field(default_factory=dict)
    _rows: dict[tuple[type[Base], Any], Base] = field(default_factory=dict)
    """Rows preloaded or added, by key: cheaper than the session's identity map (a hop
    through the greenlet each), and strong references where that map holds weak ones."""

    def emit(
        self, event: Event, routing_key: str | None = None, delay_rung: int | None = None
    ) -> None:
        self.outbox.append(Outgoing(event, routing_key, delay_rung, trace_headers()))

    def to_publish(self) -> list[Outgoing]:
        """What was emitted, its `StateChanged` notices folded into one `StateChanges`
        where the first of them was (before any `RunFinished`, as a live view expects)."""
        changes = [o.event for o in self.outbox if isinstance(o.event, StateChanged)]
        if not changes:
            return list(self.outbox)
        result: list[Outgoing] = []
        for o in self.outbox:
            if not isinstance(o.event, StateChanged):
                result.append(o)
            elif o.event is changes[0]:
                result.append(Outgoing(StateChanges(changes=tuple(changes)), headers=o.headers))
        return result

    async def get(self, model: type[M], key: Any) -> M | None:
        """The row with this primary key: added in this unit, preloaded, or read now."""
        row = self._rows.get((model, key))
        if row is not None:
            assert isinstance(row, model)
            return row
        if (model, key) in self.absent:
            return None
        return await self.session.get(model, key)

    def forget(self) -> None:
        """Drop what this unit knows of rows (after a savepoint rolled some back)."""
        self._rows.clear()
        self.absent.clear()
        self.locked_runs.clear()
        self.job_states.clear()

    def hold(self, row: Base, key: Any) -> None:
        """Keep a row read from the session, so `get(type(row), key)` finds it."""
        self._rows[(type(row), key)] = row

    def add(self, row: Base, key: Any) -> None:
        """Add a new row; `get(type(row), key)` finds it before the flush."""
        self.session.add(row)
        self.hold(row, key)
        self.absent.discard((type(row), key))

    async def job_state(self, job_id: uuid.UUID) -> dict[str, JobState]:
        """The job's remembered keys (incremental cursors), rows included for updating."""
        rows = self.job_states.get(job_id)
        if rows is None:
            found = await self.session.execute(
                select(JobState).where(JobState.job_definition_id == job_id)
            )
            rows = {row.key: row for row in found.scalars()}
            self.job_states[job_id] = rows
        return rows
