"""An API client over a real store and broker, and a listener on the events it publishes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from common.events import Event, JobDefinitionChanged, JobDue
from common.settings import Settings
from common.topology import events_exchange

E = TypeVar("E", bound=Event)

Client = AsyncTestClient[Litestar]

EVENT_TIMEOUT_SECONDS = 10.0


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
    """A client on both stores; the lifespan (engine, bus) runs around the test."""
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
async def sqlite_client(sqlite_settings: Settings) -> AsyncIterator[Client]:
    """A client on SQLite only, for tests whose subject is not the store."""
    async with AsyncTestClient(app=create_app(sqlite_settings)) as test_client:
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
