"""Runs a function in one database transaction, over a synchronous `Connection`.

The coordinator's transactions are many small statements. Through aiosqlite each
statement is a hop to its thread and back (about 0.3 ms on 2 cores), so on SQLite the
whole transaction runs in one hop instead: a synchronous engine on the same file, in a
thread of its own. On PostgreSQL the function runs in SQLAlchemy's greenlet over the
async engine (`AsyncConnection.run_sync`), so asyncpg keeps serving it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

from sqlalchemy import Connection, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from common.db.engine import configure_sqlite, ensure_sqlite_folder, is_sqlite

T = TypeVar("T")


class Transactor(Protocol):
    async def run(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` inside one transaction, committed if it returns."""
        ...

    async def close(self) -> None: ...


class GreenletTransactor:
    """Over the async engine: each statement awaits the driver (asyncpg)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, work: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        """The engine belongs to the caller."""


class ThreadTransactor:
    """A synchronous SQLite engine used from one thread: a transaction is one hop."""

    def __init__(self, url: str) -> None:
        ensure_sqlite_folder(url)
        self._engine = create_engine(
            make_url(url).set(drivername="sqlite"),
            connect_args={"timeout": 30, "check_same_thread": False},
        )
        configure_sqlite(self._engine)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orc-store")

    def _transaction(self, work: Callable[[Connection], T]) -> T:
        with self._engine.begin() as conn:
            return work(conn)

    async def run(self, work: Callable[[Connection], T]) -> T:
        # The caller's context (log fields, trace) goes along, as asyncio.to_thread does.
        call = functools.partial(contextvars.copy_context().run, self._transaction, work)
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown(wait=False)


def make_transactor(engine: AsyncEngine) -> Transactor:
    file_sqlite = engine.url.database not in (None, "", ":memory:")
    if is_sqlite(engine.url.render_as_string()) and file_sqlite:
        return ThreadTransactor(engine.url.render_as_string(hide_password=False))
    return GreenletTransactor(engine)
