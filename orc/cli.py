"""`orc`: run the engine's components, manage its state store, and drive a running
engine through its REST API (`orc jobs`, `orc runs`, `orc tasks`, `orc workers`)."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from typing import Annotated

import typer

from common.asyncapi import asyncapi_document
from common.db.migrate import upgrade, upgrade_async
from common.settings import Settings
from orc import event_loop, runtime
from orc.children import worker_processes as worker_processes_runner
from orc.client import api_url
from orc.commands import jobs, runs, tokens
from orc.commands.common import load_settings
from orc.demo import install_demo
from orc.gc_tuning import tune_collector
from orc.output import errors_as_lines
from orc.tokens import UpToken, ensure_up_token
from worker.service import DEFAULT_CONCURRENCY

app = typer.Typer(help="orc-rust-ator: event-driven ETL orchestration.", no_args_is_help=True)
db_app = typer.Typer(help="The state store.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(jobs.app, name="jobs")
app.add_typer(runs.runs_app, name="runs")
app.add_typer(runs.tasks_app, name="tasks")
app.add_typer(tokens.app, name="tokens")

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
    settings = Settings()
    tune_collector()
    event_loop.run(
        runtime.run_until_stopped(settings, components, **kwargs),  # type: ignore[arg-type]
        settings.event_loop,
    )


async def _prepare_up(settings: Settings) -> UpToken:
    await upgrade_async(settings.database_url)
    return await ensure_up_token(settings)


def _announce(settings: Settings, up_token: UpToken) -> None:
    if not up_token.made:
        if up_token.saved_in is not None:
            typer.echo(f"orc up: the CLI uses the admin token saved in {up_token.saved_in}")
        return
    typer.echo(
        f"orc up: no token was configured, so this admin token was made; it is saved in "
        f"{up_token.saved_in} (mode 0600), where the CLI finds it:\n\n"
        f"    {up_token.token}\n\n"
        f'curl needs it too: curl -H "Authorization: Bearer $(cat {up_token.saved_in})" '
        f"{api_url(settings)}/jobs\n"
    )


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Create and trigger the demo job.")] = True,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    worker_processes: Annotated[
        int | None,
        typer.Option(
            "--worker-processes",
            "-w",
            min=0,
            help="`orc worker` processes to start beside this one (default: one per core "
            "but one); 0 runs the worker in this process.",
        ),
    ] = None,
) -> None:
    """Every component on one machine: API, scheduler and coordinator in this process,
    workers in child processes (or, with `--worker-processes 0`, in this one too).

    With no token configured (ORC_API_TOKEN, ORC_ADMIN_TOKEN), it makes an admin token,
    prints it and saves it in ORC_TOKEN_FILE (.orc/token) for the CLI.
    """
    settings = load_settings()
    with errors_as_lines():
        up_token = asyncio.run(_prepare_up(settings))
    _announce(settings, up_token)
    children = max((os.cpu_count() or 1) - 1, 1) if worker_processes is None else worker_processes
    _run(
        {
            "api": runtime.run_api,
            "scheduler": runtime.run_scheduler,
            "coordinator": runtime.run_coordinator,
            "worker": (
                worker_processes_runner(children, runtime.ALL_QUEUES, concurrency)
                if children
                else runtime.worker_runner(runtime.ALL_QUEUES, concurrency)
            ),
        },
        migrate=True,
        after_start=functools.partial(install_demo, token=up_token.token) if demo else None,
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
def worker(queue: QueueOption = None, concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY) -> None:
    """A worker consuming the given task queues (default: all)."""
    _run({"worker": runtime.worker_runner(queue or runtime.ALL_QUEUES, concurrency)})


app.command("workers")(runs.workers)
app.command("plugins")(runs.plugins)


@app.command("asyncapi")
def asyncapi_command() -> None:
    """Print the AsyncAPI document of the bus (exchanges, queues, event schemas)."""
    settings = Settings()
    document = asyncapi_document(settings.namespace, broker_url=settings.broker_url)
    typer.echo(json.dumps(document, indent=2))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations to ORC_DATABASE_URL."""
    settings = Settings()
    upgrade(settings.database_url)
    typer.echo("state store is up to date")


def main() -> None:
    app()
