"""The composition root of the REST API: `create_app(settings)` and `serve(settings)`.

Nothing connects at import time. The app's lifespan builds the database engine, a
sessionmaker and a connected `Bus`, keeps them in `app.state`, registers `ORC_ADMIN_TOKEN`
(if set), starts the live-event hub, and closes it all at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import PackageNotFoundError, version

import uvicorn
from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

from api.auth import SECURITY_COMPONENTS, BearerAuthMiddleware
from api.catalog import PluginController
from api.credentials import Role, seed_token
from api.dependencies import (
    provide_bus,
    provide_hub,
    provide_session,
    provide_sessionmaker,
    provide_settings,
)
from api.errors import EXCEPTION_HANDLERS
from api.filters import provide_run_filter
from api.health import health
from api.jobs import JobController
from api.live import LiveHub
from api.operations import asyncapi, metrics
from api.pagination import provide_pagination
from api.runs import RunController
from api.streams import StreamController
from api.tasks import TaskController
from api.tokens import TokenController
from api.workers import WorkerController
from common.bus import Bus
from common.db.engine import make_engine, make_sessionmaker
from common.errors import OrcError
from common.settings import Settings

log = logging.getLogger(__name__)

SEEDED_TOKEN_NAME = "ORC_ADMIN_TOKEN"
# Open streams would hold a stopping server up: they are ended, and this is the backstop.
GRACEFUL_SHUTDOWN_SECONDS = 5


class ApiServerError(OrcError):
    """The API server could not start (port taken, database or broker unreachable)."""


def _version() -> str:
    try:
        return version("orc-rust-ator")
    except PackageNotFoundError:
        return "0.0.0"


@contextlib.asynccontextmanager
async def _resources(app: Litestar) -> AsyncIterator[None]:
    """Open the engine, sessionmaker and bus for the app's life; close them after."""
    settings: Settings = app.state.settings
    engine = make_engine(settings.database_url)
    bus = Bus(settings.broker_url, settings.namespace)
    try:
        await bus.connect()
        sessionmaker = make_sessionmaker(engine)
        app.state.engine = engine
        app.state.sessionmaker = sessionmaker
        app.state.bus = bus
        if settings.admin_token is not None:
            clear = settings.admin_token.get_secret_value()
            if await seed_token(sessionmaker, clear, SEEDED_TOKEN_NAME, Role.ADMIN):
                log.info("registered the admin token of ORC_ADMIN_TOKEN")
        hub: LiveHub = app.state.live
        await hub.start(bus)
        yield
    finally:
        await bus.close()
        await engine.dispose()


def create_app(settings: Settings) -> Litestar:
    """Build the Litestar app for these settings; it connects when its lifespan starts.

    OpenAPI: the JSON document at `/schema` (also `/schema/openapi.json`), Swagger UI at
    `/schema/swagger`. Every route but `/health` needs a bearer token (`/schema` too,
    unless `ORC_API_OPEN_DOCS`); see `api.auth`.
    """
    app = Litestar(
        route_handlers=[
            JobController,
            RunController,
            TaskController,
            StreamController,
            WorkerController,
            PluginController,
            TokenController,
            health,
            metrics,
            asyncapi,
        ],
        dependencies={
            "session": Provide(provide_session),
            "sessionmaker": Provide(provide_sessionmaker, sync_to_thread=False),
            "bus": Provide(provide_bus, sync_to_thread=False),
            "hub": Provide(provide_hub, sync_to_thread=False),
            "settings": Provide(provide_settings, sync_to_thread=False),
            "page": Provide(provide_pagination, sync_to_thread=False),
            "run_filter": Provide(provide_run_filter, sync_to_thread=False),
        },
        middleware=[
            DefineMiddleware(
                BearerAuthMiddleware, exclude=["^/schema"] if settings.api_open_docs else None
            )
        ],
        request_max_body_size=settings.api_max_body_bytes,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[_resources],
        # The process that embeds the app (`orc`) owns logging; Litestar must not reset it.
        logging_config=None,
        openapi_config=OpenAPIConfig(
            title="orc-rust-ator",
            version=_version(),
            description="Job definitions, runs and tasks of the ETL orchestration engine. "
            "Every endpoint but `/health` needs `Authorization: Bearer <token>`; a token's role "
            "(viewer < operator < admin) decides what it may do.",
            path="/schema",
            components=SECURITY_COMPONENTS,
            render_plugins=[JsonRenderPlugin(path=["/", "/openapi.json"]), SwaggerRenderPlugin()],
        ),
    )
    app.state.settings = settings
    app.state.live = LiveHub()
    return app


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process that embeds it, and
    sets an event once it listens (uvicorn itself offers only a flag to poll)."""

    def __init__(self, config: uvicorn.Config, started: asyncio.Event | None) -> None:
        super().__init__(config)
        self._started_event = started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._started_event is not None:
            self._started_event.set()


async def _exit_when_set(stop: asyncio.Event, server: uvicorn.Server, hub: LiveHub) -> None:
    await stop.wait()
    server.should_exit = True
    hub.close()


async def serve(
    settings: Settings,
    started: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    app: Litestar | None = None,
) -> None:
    """Serve the API on `settings.api_host:api_port` until `stop` is set; then return.

    Meant to run inside a bigger process (`orc api`, `orc up`), so uvicorn installs **no**
    signal handlers: the caller handles SIGINT/SIGTERM and sets `stop`, and the server
    then finishes its open requests and runs the app's shutdown (closing the database
    engine and the bus). `started` is set once the socket listens and the lifespan has
    connected. Cancelling the task that awaits `serve` also stops it, but abruptly.

    Raises `ApiServerError` when the server cannot start (port taken, database or broker
    unreachable) instead of uvicorn's `SystemExit`, which would end the whole process.
    `app` serves a given app (built by `create_app`) instead of a new one.
    """
    app = app or create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    server = _EmbeddedServer(config, started)
    waiter = (
        asyncio.create_task(_exit_when_set(stop, server, app.state.live))
        if stop is not None
        else None
    )
    try:
        # Awaited here, not in a task of its own: uvicorn's SystemExit on a failed startup
        # must be caught before asyncio's task machinery re-raises it out of the loop.
        await server.serve()
    except SystemExit as exc:
        raise ApiServerError(
            f"the API server could not start on {settings.api_host}:{settings.api_port}"
        ) from exc
    finally:
        if waiter is not None:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
