"""A unit of work: one database session plus the events to publish once it commits."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from common.bus import Outgoing
from common.events import Event, utcnow
from common.tracing import trace_headers


@dataclass
class UnitOfWork:
    session: AsyncSession
    now: datetime = field(default_factory=utcnow)
    outbox: list[Outgoing] = field(default_factory=list)

    def emit(
        self, event: Event, routing_key: str | None = None, delay_rung: int | None = None
    ) -> None:
        self.outbox.append(Outgoing(event, routing_key, delay_rung, trace_headers()))
