"""An API client over a real store and broker, and a listener on the events it publishes.

The clients send an admin token (seeded through `ORC_ADMIN_TOKEN`); tests of the other
roles make their tokens with `make_token`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pydantic import SecretStr

from api.app import create_app, serve
from api.credentials import Role, add_token
from common.db.engine import make_engine, make_sessionmaker
from common.events import Event, JobDefinitionChanged, JobDue
from common.settings import Settings
from common.topology import events_exchange

E = TypeVar("E", bound=Event)

Client = AsyncTestClient[Litestar]

EVENT_TIMEOUT_SECONDS = 10.0

ADMIN_TOKEN = "orc_test-admin-token-for-the-api-tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def served(settings: Settings, app: Litestar | None = None) -> AsyncIterator[str]:
    """Serve the API over real HTTP on a free port (for event streams, which the in-memory
    test client would buffer to their end); yields the base URL."""
    settings = settings.model_copy(update={"api_port": free_port()})
    started, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(serve(settings, started, stop, app))
    try:
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()
        assert started.is_set(), "the API did not start"
        yield f"http://127.0.0.1:{settings.api_port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


def http_client(base: str, token: str | None = ADMIN_TOKEN) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, headers=bearer(token) if token else {}, timeout=15)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def with_admin_token(settings: Settings) -> Settings:
    return settings.model_copy(update={"admin_token": SecretStr(ADMIN_TOKEN)})


async def make_token(settings: Settings, role: Role, name: str = "test") -> str:
    """A new token of `role`, written to the store as `orc tokens create` does."""
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            _, clear = add_token(session, name, role)
            await session.commit()
        return clear
    finally:
        await engine.dispose()


def job_body(name: str = "daily-sales", **changes: Any) -> dict[str, Any]:
    """A valid job: CSV under the data root into a DuckDB file under it."""
    body: dict[str, Any] = {
        "name": name,
        "schedule": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "extractor_type": "csv",
        "extractor_config": {"path": "in/sales.csv", "delimiter": ";"},
        "loader_type": "duckdb",
        "loader_config": {"database": "out/sales.duckdb", "table": "sales", "mode": "append"},
    }
    body.update(changes)
    return body


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    """An admin's client on both stores; the lifespan (engine, bus) runs around the test."""
    async with AsyncTestClient(app=create_app(with_admin_token(settings))) as test_client:
        test_client.headers.update(bearer(ADMIN_TOKEN))
        yield test_client


@pytest.fixture
async def sqlite_client(sqlite_settings: Settings) -> AsyncIterator[Client]:
    """An admin's client on SQLite only, for tests whose subject is not the store."""
    async with AsyncTestClient(app=create_app(with_admin_token(sqlite_settings))) as test_client:
        test_client.headers.update(bearer(ADMIN_TOKEN))
        yield test_client


class Listener:
    """A private queue on `<ns>.events`, bound before the test acts: no message is missed."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def _receive(self, message: AbstractIncomingMessage) -> None:
        await self.inbox.put(message)

    async def next(self, model: type[E]) -> E:
        """The next event heard, which must be of this type; fails after a few seconds."""
        async with asyncio.timeout(EVENT_TIMEOUT_SECONDS):
            message = await self.inbox.get()
        assert message.routing_key == model.routing_key
        return model.model_validate_json(message.body)

    async def next_of(self, model: type[E]) -> E:
        """The next event of this type heard, skipping others."""
        async with asyncio.timeout(EVENT_TIMEOUT_SECONDS):
            while True:
                message = await self.inbox.get()
                if message.routing_key == model.routing_key:
                    return model.model_validate_json(message.body)


@pytest.fixture
async def events(sqlite_client: Client, sqlite_settings: Settings) -> AsyncIterator[Listener]:
    """Hears `job.due` and `job.changed` of the SQLite client's namespace."""
    listener = Listener()
    connection = await aio_pika.connect(sqlite_settings.broker_url)
    try:
        channel = await connection.channel()
        # The app's lifespan declared the exchange; we only bind to it.
        exchange = await channel.get_exchange(events_exchange(sqlite_settings.namespace))
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in (JobDue.routing_key, JobDefinitionChanged.routing_key):
            await queue.bind(exchange, routing_key=key)
        await queue.consume(listener._receive, no_ack=True)
        yield listener
    finally:
        await connection.close()
