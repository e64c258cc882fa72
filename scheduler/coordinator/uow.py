"""A unit of work: one database session plus the events to publish once it commits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from common.bus import Outgoing
from common.events import Event, utcnow
from common.states import TaskType
from common.tracing import trace_headers

ConfigSealer = Callable[[TaskType, str, dict[str, Any]], dict[str, Any]]


def _as_is(task_type: TaskType, plugin: str, config: dict[str, Any]) -> dict[str, Any]:
    return config


@dataclass
class UnitOfWork:
    session: AsyncSession
    now: datetime = field(default_factory=utcnow)
    outbox: list[Outgoing] = field(default_factory=list)
    seal: ConfigSealer = _as_is
    """Turns a plugin config into what may ride the bus (secret values encrypted)."""

    def emit(
        self, event: Event, routing_key: str | None = None, delay_rung: int | None = None
    ) -> None:
        self.outbox.append(Outgoing(event, routing_key, delay_rung, trace_headers()))
