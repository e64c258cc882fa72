"""A unit of work: one database session plus the events to publish once it commits."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from common.events import Event


@dataclass
class UnitOfWork:
    session: AsyncSession
    outbox: list[tuple[Event, str | None]] = field(default_factory=list)

    def emit(self, event: Event, routing_key: str | None = None) -> None:
        self.outbox.append((event, routing_key))
