"""The transactional outbox: events are stored with the state change that caused them,
published after the commit, and deleted once confirmed. The relay sends what a crash or
a broker outage left behind (possibly twice: every consumer is idempotent)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Delete, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.bus import Bus, Outgoing
from common.db.models import OutboxMessage, table_of
from common.events import EVENT_TYPES, Event, utcnow

log = logging.getLogger(__name__)

_MODELS: dict[str, type[Event]] = {cls.__name__: cls for cls in EVENT_TYPES}
RELAY_BATCH = 500


def store(conn: Connection, outgoing: Sequence[Outgoing]) -> list[uuid.UUID]:
    """Add the events that must survive a crash (`Event.outboxed`); returns their ids."""
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "id": o.event.event_id,
            "event_type": type(o.event).__name__,
            "routing_key": o.routing_key or o.event.routing_key,
            "delay_rung": o.delay_rung,
            "body": o.event.model_dump_json(),
            "created_at": now,
        }
        for o in outgoing
        if o.event.outboxed
    ]
    if rows:
        conn.execute(insert(table_of(OutboxMessage)), rows)
    return [r["id"] for r in rows]


def delete_rows(conn: Connection, ids: Sequence[uuid.UUID]) -> None:
    if ids:
        conn.execute(_deletion(ids))


def _deletion(ids: Sequence[uuid.UUID]) -> Delete:
    return delete(OutboxMessage).where(OutboxMessage.id.in_(ids))


async def clear(sessionmaker: async_sessionmaker[AsyncSession], ids: Sequence[uuid.UUID]) -> None:
    if not ids:
        return
    async with sessionmaker() as session, session.begin():
        await session.execute(_deletion(ids))


async def relay(
    bus: Bus, sessionmaker: async_sessionmaker[AsyncSession], older_than: timedelta
) -> int:
    """Publish outbox rows older than `older_than` (their own publish did not happen)."""
    async with sessionmaker() as session:
        rows = (
            (
                await session.execute(
                    select(OutboxMessage)
                    .where(OutboxMessage.created_at < utcnow() - older_than)
                    .order_by(OutboxMessage.created_at)
                    .limit(RELAY_BATCH)
                )
            )
            .scalars()
            .all()
        )
    if not rows:
        return 0
    outgoing = [
        Outgoing(_MODELS[r.event_type].model_validate_json(r.body), r.routing_key, r.delay_rung)
        for r in rows
        if r.event_type in _MODELS
    ]
    await bus.publish_many(outgoing)
    await clear(sessionmaker, [r.id for r in rows])
    log.info("relayed %d outbox events", len(rows))
    return len(rows)
