"""Builds and runs components inside one process until a stop signal arrives."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.app import serve
from common.aio import stop_tasks
from common.bus import Bus, connect_bus
from common.db.engine import make_engine, make_read_sessionmaker, make_sessionmaker
from common.db.migrate import upgrade_async
from common.db.transactions import make_transactor
from common.logs import configure_logging
from common.ops_server import OpsServer
from common.settings import Settings
from common.staging import StagingArea
from common.tracing import configure_tracing
from plugins.secrets import secret_key
from scheduler.coordinator.sealing import config_sealer
from scheduler.coordinator.service import Coordinator, CoordinatorConfig
from scheduler.cron_scheduler import Scheduler
from worker.execution import ExecutionOptions
from worker.service import Worker, WorkerConfig

log = logging.getLogger(__name__)

ALL_QUEUES = ("extract", "load")
API_GRACE_SECONDS = 10.0


def stop_seconds(settings: Settings) -> float:
    """How long components get to stop once cancelled: the longer of the API's and the
    workers' grace periods, and time to hand back and say goodbye."""
    return max(API_GRACE_SECONDS, settings.worker_grace_seconds) + 10.0


@dataclass
class Resources:
    """Connections shared by the components of one process."""

    settings: Settings
    bus: Bus
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    bus = await connect_bus(settings.broker_url, settings.namespace)
    engine = make_engine(settings.database_url)
    try:
        yield Resources(settings, bus, engine, make_sessionmaker(engine))
    finally:
        await bus.close()
        await engine.dispose()


Component = Callable[[Resources], Coroutine[Any, Any, None]]


async def ready(res: Resources) -> bool:
    """Readiness: the broker connection is up and the state store answers."""
    if not res.bus.connected:
        return False
    async with res.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    return True


async def run_coordinator(res: Resources) -> None:
    s = res.settings
    config = CoordinatorConfig(
        batch_size=s.prefetch,
        heartbeat_seconds=s.heartbeat_seconds,
        lost_after_heartbeats=s.lost_after_heartbeats,
        outbox_relay_seconds=s.outbox_relay_seconds,
        seal=config_sealer(secret_key(s)),
        load_after_extract=s.load_after_extract,
        staging=StagingArea(s.staging_url),
        staging_retention_seconds=s.staging_retention_hours * 3600,
    )
    transactor = make_transactor(res.engine)
    try:
        await Coordinator(res.bus, transactor, config).run()
    finally:
        await transactor.close()


async def run_scheduler(res: Resources) -> None:
    reader = make_read_sessionmaker(res.engine)
    await Scheduler(res.bus, reader, res.settings.scheduler_refresh_seconds).run()


def worker_runner(queues: Sequence[str], concurrency: int) -> Component:
    async def run(res: Resources) -> None:
        s = res.settings
        worker = Worker(
            res.bus,
            StagingArea(s.staging_url, inline_bytes=s.staging_inline_bytes),
            s.resolved_data_root,
            WorkerConfig(
                queues=tuple(queues),
                concurrency=concurrency,
                prefetch_per_slot=s.worker_prefetch_per_slot,
                long_task_seconds=s.worker_long_task_seconds,
                heartbeat_seconds=s.heartbeat_seconds,
                grace_seconds=s.worker_grace_seconds,
                long_task_ack_seconds=s.long_task_ack_seconds,
                start_report_seconds=s.start_report_seconds,
                execution=ExecutionOptions.from_settings(s),
            ),
        )
        await worker.start()
        try:
            await asyncio.Event().wait()
        finally:
            await worker.shutdown()

    return run


async def run_api(res: Resources) -> None:
    # Cancelled by the runtime on shutdown: let uvicorn finish open requests and run the
    # app's shutdown instead of dropping them.
    stop = asyncio.Event()
    server = asyncio.create_task(serve(res.settings, stop=stop))
    try:
        await asyncio.shield(server)
    except asyncio.CancelledError:
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(server, API_GRACE_SECONDS)
        raise


async def run_until_stopped(
    settings: Settings,
    components: dict[str, Component],
    migrate: bool = False,
    after_start: Callable[[Settings], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run the components until SIGINT/SIGTERM, or until one of them fails."""
    configure_logging(settings.log_format, settings.log_level)
    configure_tracing("orc-" + "+".join(components))
    if migrate:
        await upgrade_async(settings.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with resources(settings) as res:
        ops = None
        if settings.metrics_port is not None:
            ops = OpsServer(settings.metrics_host, settings.metrics_port, lambda: ready(res))
            await ops.start()
        tasks: dict[asyncio.Task[Any], str] = {
            asyncio.create_task(run(res), name=name): name for name, run in components.items()
        }
        log.info("started: %s", ", ".join(components))
        if after_start is not None:
            tasks[asyncio.create_task(after_start(settings), name="after-start")] = "after-start"
        stopper: asyncio.Task[Any] = asyncio.create_task(stop.wait())
        failed: BaseException | None = None
        pending: set[asyncio.Task[Any]] = set(tasks)
        while pending:
            done, _ = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                break
            for task in done:
                pending.discard(task)
                if task.exception() is not None:
                    failed = task.exception()
                    log.error("%s stopped with an error", tasks[task], exc_info=failed)
            if failed is not None:
                break
        log.info("stopping")
        stuck = await stop_tasks(pending, stop_seconds(settings))
        if stuck:
            # Exit anyway: a supervisor would kill a process that ignores SIGTERM, and what
            # it held (unacked messages) goes back to the broker either way.
            log.error("did not stop in time: %s", ", ".join(stuck))
            failed = failed or RuntimeError(f"did not stop: {', '.join(stuck)}")
        stopper.cancel()
        if ops is not None:
            await ops.close()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    if failed is not None:
        raise SystemExit(1)
