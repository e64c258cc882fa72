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
from common.events import RunCancelRequested, StateChanged
from common.settings import Settings
from common.states import RunStatus
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


async def test_stored_events_come_back_encoded_as_their_rows(settings: Settings) -> None:
    """What `store` hands on to be published is the row's JSON (encoded once), and an
    event that is not outboxed passes through untouched."""
    await upgrade_async(settings.database_url)
    engine = make_engine(settings.database_url)
    transactor = make_transactor(engine)
    kept = RunCancelRequested(run_id=uuid.uuid4())
    notice = StateChanged(
        job_definition_id=uuid.uuid4(), run_id=uuid.uuid4(), run_status=RunStatus.RUNNING
    )
    assert not notice.outboxed

    def store_and_read(conn: Connection) -> tuple[list[Outgoing], list[str]]:
        out = outbox.store(conn, [Outgoing(kept), Outgoing(notice)])
        t = table_of(OutboxMessage)
        return out, list(conn.execute(select(t.c.body)).scalars())

    try:
        out, bodies = await transactor.run(store_and_read)
        assert [o.event for o in out] == [kept, notice]
        assert bodies == [kept.model_dump_json()]
        assert out[0].body == bodies[0].encode()
        assert out[1].body is None
    finally:
        await transactor.close()
        await engine.dispose()
