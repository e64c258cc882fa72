"""The transactional outbox: events are stored with the state change that caused them,
published after the commit, and deleted once confirmed. The relay sends what a crash or
a broker outage left behind (possibly twice: every consumer is idempotent)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Delete, Row, delete, insert, select

from common.bus import Bus, Outgoing
from common.db.models import OutboxMessage, table_of
from common.db.transactions import Transactor
from common.events import EVENT_TYPES, Event, utcnow

log = logging.getLogger(__name__)

_MODELS: dict[str, type[Event]] = {cls.__name__: cls for cls in EVENT_TYPES}
RELAY_BATCH = 500


def store(conn: Connection, outgoing: Sequence[Outgoing]) -> list[Outgoing]:
    """Add the events that must survive a crash (`Event.outboxed`). Returns `outgoing`
    with those events' JSON attached, so publishing them does not encode them again."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    result: list[Outgoing] = []
    for o in outgoing:
        if not o.event.outboxed:
            result.append(o)
            continue
        body = o.event.model_dump_json()
        rows.append(
            {
                "id": o.event.event_id,
                "event_type": type(o.event).__name__,
                "routing_key": o.routing_key or o.event.routing_key,
                "delay_rung": o.delay_rung,
                "body": body,
                "created_at": now,
            }
        )
        result.append(dataclasses.replace(o, body=body.encode()))
    if rows:
        conn.execute(insert(table_of(OutboxMessage)), rows)
    return result


def delete_rows(conn: Connection, ids: Sequence[uuid.UUID]) -> None:
    if ids:
        conn.execute(_deletion(ids))


def _deletion(ids: Sequence[uuid.UUID]) -> Delete:
    return delete(OutboxMessage).where(OutboxMessage.id.in_(ids))


async def relay(bus: Bus, transactor: Transactor, older_than: timedelta) -> int:
    """Publish outbox rows older than `older_than` (their own publish did not happen)."""
    rows = await transactor.run(functools.partial(_left_behind, older_than=older_than))
    if not rows:
        return 0
    outgoing = [
        Outgoing(
            _MODELS[r.event_type].model_validate_json(r.body),
            r.routing_key,
            r.delay_rung,
            body=r.body.encode(),
        )
        for r in rows
        if r.event_type in _MODELS
    ]
    await bus.publish_many(outgoing)
    await transactor.run(functools.partial(delete_rows, ids=[r.id for r in rows]))
    log.info("relayed %d outbox events", len(rows))
    return len(rows)


def _left_behind(conn: Connection, older_than: timedelta) -> Sequence[Row[Any, Any, Any, Any, Any]]:
    t = table_of(OutboxMessage)
    return conn.execute(
        select(t.c.id, t.c.event_type, t.c.routing_key, t.c.delay_rung, t.c.body)
        .where(t.c.created_at < utcnow() - older_than)
        .order_by(t.c.created_at)
        .limit(RELAY_BATCH)
    ).all()
