"""The outbox relay sends what a crash left in the outbox, then deletes it; it runs in the
coordinator's own transactions (on SQLite, its thread), never through aiosqlite."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import Connection, func, select

from common.bus import Outgoing, connect_bus
from common.db.engine import make_engine
from common.db.migrate import upgrade_async
from common.db.models import OutboxMessage, table_of
from common.db.transactions import make_transactor
from common.events import RunCancelRequested
from common.settings import Settings
from scheduler.coordinator import outbox
from tests.harness import tap


def _count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(table_of(OutboxMessage))).scalar_one())


async def test_relay_publishes_rows_left_behind_and_deletes_them(settings: Settings) -> None:
    await upgrade_async(settings.database_url)
    engine = make_engine(settings.database_url)
    transactor = make_transactor(engine)
    left = [RunCancelRequested(run_id=uuid.uuid4()) for _ in range(3)]
    assert all(e.outboxed for e in left)
    try:
        await transactor.run(lambda conn: outbox.store(conn, [Outgoing(e) for e in left]))
        async with tap(settings, RunCancelRequested.routing_key) as t:
            bus = await connect_bus(settings.broker_url, settings.namespace)
            try:
                # Younger rows wait: their own publish may still be on its way.
                assert await outbox.relay(bus, transactor, timedelta(hours=1)) == 0
                assert await outbox.relay(bus, transactor, timedelta(0)) == 3
            finally:
                await bus.close()
            seen = {(await t.next(RunCancelRequested, timeout=10)).event_id for _ in left}
        assert seen == {e.event_id for e in left}
        assert await transactor.run(_count) == 0
    finally:
        await transactor.close()
        await engine.dispose()
