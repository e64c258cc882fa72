"""`orc`: run the engine's components and manage its state store."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from common.db.migrate import upgrade
from common.settings import Settings
from orc import runtime
from orc.demo import install_demo

app = typer.Typer(help="orc-rust-ator: event-driven ETL orchestration.", no_args_is_help=True)
db_app = typer.Typer(help="The state store.", no_args_is_help=True)
app.add_typer(db_app, name="db")

QueueOption = Annotated[
    list[str] | None,
    typer.Option("--queue", "-q", help="Task queue to consume (repeatable): extract, load."),
]
ConcurrencyOption = Annotated[
    int, typer.Option("--concurrency", "-c", min=1, help="Tasks run at once.")
]


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _run(components: dict[str, runtime.Component], **kwargs: object) -> None:
    _setup_logging()
    asyncio.run(runtime.run_until_stopped(Settings(), components, **kwargs))  # type: ignore[arg-type]


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Create and trigger the demo job.")] = True,
    concurrency: ConcurrencyOption = 4,
) -> None:
    """Every component in one process: API, scheduler, coordinator, workers."""
    _run(
        {
            "api": runtime.run_api,
            "scheduler": runtime.run_scheduler,
            "coordinator": runtime.run_coordinator,
            "worker": runtime.worker_runner(runtime.ALL_QUEUES, concurrency),
        },
        migrate=True,
        after_start=install_demo if demo else None,
    )


@app.command()
def api() -> None:
    """The REST API."""
    _run({"api": runtime.run_api})


@app.command()
def scheduler() -> None:
    """The cron scheduler."""
    _run({"scheduler": runtime.run_scheduler})


@app.command()
def coordinator() -> None:
    """The run-coordinator (the state machine)."""
    _run({"coordinator": runtime.run_coordinator})


@app.command()
def worker(queue: QueueOption = None, concurrency: ConcurrencyOption = 4) -> None:
    """A worker consuming the given task queues (default: all)."""
    _run({"worker": runtime.worker_runner(queue or runtime.ALL_QUEUES, concurrency)})


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations to ORC_DATABASE_URL."""
    settings = Settings()
    upgrade(settings.database_url)
    typer.echo("state store is up to date")


def main() -> None:
    app()
