"""`orc runs …`, `orc tasks …`, `orc workers`, `orc plugins`: reading the engine's
records, following and cancelling runs."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from orc.client import ApiClient
from orc.commands.common import api
from orc.commands.jobs import follow_run
from orc.output import (
    Output,
    OutputOption,
    duration,
    fields,
    print_json,
    rows,
    stdout,
    styled,
    table,
    when,
)

runs_app = typer.Typer(help="Runs: list, show, follow, cancel.", no_args_is_help=True)
tasks_app = typer.Typer(help="Tasks of runs.", no_args_is_help=True)

RunId = Annotated[uuid.UUID, typer.Argument(help="The run's id.", show_default=False)]


class RunStatusChoice(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class TriggerChoice(StrEnum):
    schedule = "schedule"
    manual = "manual"
    event = "event"


class WorkerStatusChoice(StrEnum):
    ACTIVE = "ACTIVE"
    LOST = "LOST"
    STOPPED = "STOPPED"


def _job_names(client: ApiClient) -> dict[str, str]:
    page = client.get("/jobs", limit=1000)
    return {j["id"]: j["name"] for j in page["items"]}


def _task_lines(tasks: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            t["id"],
            t["task_type"],
            styled(t["status"]),
            f"{t['attempt_count']}/{t['max_attempts']}",
            rows(t["rows_processed"]),
            duration(t["started_at"], t["completed_at"]),
            t["worker_id"] or "-",
            t["error_message"] or "",
        ]
        for t in tasks
    ]


TASK_COLUMNS = ["ID", "TYPE", "STATUS", "ATTEMPT", "ROWS", "ELAPSED", "WORKER", "ERROR"]


@runs_app.command("list")
def list_runs(
    job: Annotated[
        str | None, typer.Option("--job", "-j", help="Only this job's (name or id).")
    ] = None,
    status: Annotated[
        RunStatusChoice | None, typer.Option("--status", "-s", case_sensitive=False)
    ] = None,
    trigger: Annotated[TriggerChoice | None, typer.Option(case_sensitive=False)] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only runs created at or after this time.")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="Only runs created before this time.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    output: OutputOption = Output.table,
) -> None:
    """Runs, newest first."""
    params: dict[str, Any] = {
        "status": status.value if status else None,
        "trigger": trigger.value if trigger else None,
        # A time typed without an offset is local time.
        "created_after": since.astimezone().isoformat() if since else None,
        "created_before": until.astimezone().isoformat() if until else None,
        "limit": limit,
        "offset": offset,
    }
    with api() as client:
        if job is not None:
            found = client.job(job)
            page = client.get(f"/jobs/{found['id']}/runs", **params)
            names = {found["id"]: found["name"]}
        else:
            page = client.get("/job_runs", **params)
            names = _job_names(client) if output is Output.table and page["items"] else {}
    if output is Output.json:
        print_json(page)
        return
    lines = [
        [
            r["id"],
            names.get(r["job_definition_id"], r["job_definition_id"]),
            styled(r["status"]),
            r["trigger"],
            when(r["created_at"]),
            duration(r["started_at"], r["completed_at"]),
            r["error_message"] or "",
        ]
        for r in page["items"]
    ]
    total = page["total"]
    title = f"{total} run{'s' if total != 1 else ''}" + (
        f" (showing {len(lines)})" if total > len(lines) else ""
    )
    stdout().print(
        table(title, ["ID", "JOB", "STATUS", "TRIGGER", "CREATED", "DURATION", "ERROR"], lines)
    )


@runs_app.command("show")
def show(run_id: RunId, output: OutputOption = Output.table) -> None:
    """A run and its tasks."""
    with api() as client:
        run = client.get(f"/job_runs/{run_id}")
        tasks = client.get(f"/job_runs/{run_id}/tasks")["items"]
        job_name = client.get(f"/jobs/{run['job_definition_id']}")["name"]
    if output is Output.json:
        print_json({"run": run, "tasks": tasks})
        return
    console = stdout()
    console.print(
        fields(
            f"run {run['id']}",
            [
                ("job", f"{job_name} ({run['job_definition_id']})"),
                ("status", styled(run["status"])),
                ("trigger", run["trigger"]),
                ("scheduled for", when(run["scheduled_for"])),
                ("created", when(run["created_at"])),
                ("started", when(run["started_at"])),
                ("completed", when(run["completed_at"])),
                ("duration", duration(run["started_at"], run["completed_at"])),
                ("error", run["error_message"] or "-"),
            ],
        )
    )
    if tasks:
        console.print(table("tasks", TASK_COLUMNS, _task_lines(tasks)))


@runs_app.command("follow")
def follow(run_id: RunId, output: OutputOption = Output.table) -> None:
    """Watch a run until it ends; exit 0 COMPLETED, 1 FAILED, 2 CANCELLED."""
    with api() as client:
        follow_run(client, run_id, output, None)


@runs_app.command("cancel")
def cancel(run_id: RunId, output: OutputOption = Output.table) -> None:
    """Ask the engine to cancel a run that has not finished."""
    with api() as client:
        accepted = client.request("POST", f"/job_runs/{run_id}/cancel")
    if output is Output.json:
        print_json(accepted)
    else:
        stdout().print(
            f"cancel of run {run_id} requested (it was {accepted['status']})", highlight=False
        )


@tasks_app.command("show")
def show_task(
    task_id: Annotated[uuid.UUID, typer.Argument(help="The task's id.", show_default=False)],
    output: OutputOption = Output.table,
) -> None:
    """One task of a run."""
    with api() as client:
        task = client.get(f"/tasks/{task_id}")
    if output is Output.json:
        print_json(task)
        return
    stdout().print(
        fields(
            f"task {task['id']}",
            [
                ("run", task["job_run_id"]),
                ("type", task["task_type"]),
                ("status", styled(task["status"])),
                ("attempt", f"{task['attempt_count']} of {task['max_attempts']}"),
                ("rows", rows(task["rows_processed"])),
                ("worker", task["worker_id"] or "-"),
                ("created", when(task["created_at"])),
                ("started", when(task["started_at"])),
                ("completed", when(task["completed_at"])),
                ("elapsed", duration(task["started_at"], task["completed_at"])),
                ("error", task["error_message"] or "-"),
            ],
        )
    )


def workers(
    status: Annotated[
        WorkerStatusChoice | None, typer.Option("--status", "-s", case_sensitive=False)
    ] = None,
    output: OutputOption = Output.table,
) -> None:
    """The workers the engine knows of, the most recently heard of first."""
    with api() as client:
        page = client.get("/workers", status=status.value if status else None, limit=1000)
    if output is Output.json:
        print_json(page)
        return
    lines = [
        [
            w["id"],
            w["host"],
            ", ".join(w["queues"]),
            str(w["concurrency"]),
            styled(w["status"]),
            when(w["started_at"]),
            when(w["last_seen"]),
        ]
        for w in page["items"]
    ]
    stdout().print(
        table(
            f"{page['total']} worker{'s' if page['total'] != 1 else ''}",
            ["ID", "HOST", "QUEUES", "CONCURRENCY", "STATUS", "STARTED", "LAST SEEN"],
            lines,
        )
    )


def plugins(output: OutputOption = Output.table) -> None:
    """The extractors and loaders a job may use, with their config fields."""
    with api() as client:
        catalog = client.get("/plugins")
    if output is Output.json:
        print_json(catalog)
        return
    lines = []
    for plugin in [*catalog["extractors"], *catalog["loaders"]]:
        schema = plugin["config_schema"]
        required = set(schema.get("required", []))
        names = [f"{n}*" if n in required else n for n in schema.get("properties", {})]
        lines.append([plugin["kind"], plugin["name"], ", ".join(names)])
    stdout().print(table("plugins (* required)", ["KIND", "NAME", "CONFIG FIELDS"], lines))
