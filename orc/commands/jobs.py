"""`orc jobs …`: job definitions, and running one now."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import typer

from orc.client import ApiClient
from orc.commands.common import api, read_document
from orc.follow import JsonRenderer, LineRenderer, LiveRenderer, Renderer, RunView, follow
from orc.output import (
    Output,
    OutputOption,
    duration,
    fields,
    print_json,
    stdout,
    styled,
    table,
    when,
)

app = typer.Typer(help="Job definitions: create, list, change, delete, run.", no_args_is_help=True)

JobRef = Annotated[str, typer.Argument(help="The job's name or id.", show_default=False)]
FileOption = Annotated[
    str,
    typer.Option("--file", "-f", help="The job as YAML or JSON (`-`: standard input)."),
]


def _plugins(job: dict[str, Any]) -> str:
    return f"{job['extractor_type']} → {job['loader_type']}"


def print_jobs(jobs: list[dict[str, Any]], total: int) -> None:
    lines = [
        [
            j["name"],
            j["id"],
            j["schedule"] or "-",
            "yes" if j["enabled"] else "no",
            _plugins(j),
            when(j["updated_at"]),
        ]
        for j in jobs
    ]
    title = f"{total} job{'s' if total != 1 else ''}" + (
        f" (showing {len(jobs)})" if total > len(jobs) else ""
    )
    stdout().print(table(title, ["NAME", "ID", "SCHEDULE", "ENABLED", "PLUGINS", "UPDATED"], lines))


def print_job(job: dict[str, Any], runs: list[dict[str, Any]]) -> None:
    console = stdout()
    retry = (
        f"{job['retry_backoff_seconds']}s x {job['retry_backoff_factor']} "
        f"(max {job['retry_backoff_max_seconds']}s, jitter {job['retry_jitter']})"
    )
    console.print(
        fields(
            f"job {job['name']}",
            [
                ("id", job["id"]),
                ("schedule", f"{job['schedule'] or '-'} ({job['timezone']})"),
                ("enabled", "yes" if job["enabled"] else "no"),
                ("extractor", f"{job['extractor_type']} {job['extractor_config']}"),
                ("loader", f"{job['loader_type']} {job['loader_config']}"),
                ("attempts", str(job["max_attempts"])),
                ("retry back-off", retry),
                ("timeout", f"{job['timeout_seconds']}s" if job["timeout_seconds"] else "none"),
                ("created", when(job["created_at"])),
                ("updated", when(job["updated_at"])),
            ],
        )
    )
    if runs:
        console.print(
            table(
                "latest runs",
                ["RUN", "STATUS", "TRIGGER", "CREATED", "DURATION"],
                [
                    [
                        r["id"],
                        styled(r["status"]),
                        r["trigger"],
                        when(r["created_at"]),
                        duration(r["started_at"], r["completed_at"]),
                    ]
                    for r in runs
                ],
            )
        )


def _show_saved(job: dict[str, Any], verb: str, output: Output) -> None:
    if output is Output.json:
        print_json(job)
    else:
        stdout().print(f"{verb} job {job['name']} ({job['id']})", highlight=False)


@app.command("create")
def create(file: FileOption, output: OutputOption = Output.table) -> None:
    """Create a job from a YAML or JSON file (the fields of `POST /jobs`)."""
    body = read_document(file)
    with api() as client:
        _show_saved(client.request("POST", "/jobs", json=body), "created", output)


@app.command("list")
def list_jobs(
    enabled: Annotated[
        bool | None, typer.Option("--enabled/--disabled", help="Only enabled, or disabled.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    output: OutputOption = Output.table,
) -> None:
    """Job definitions, newest first."""
    with api() as client:
        page = client.get(
            "/jobs",
            enabled=None if enabled is None else str(enabled).lower(),
            limit=limit,
            offset=offset,
        )
    if output is Output.json:
        print_json(page)
    else:
        print_jobs(page["items"], page["total"])


@app.command("show")
def show(job: JobRef, output: OutputOption = Output.table) -> None:
    """One job and its latest runs."""
    with api() as client:
        found = client.job(job)
        runs = client.get(f"/jobs/{found['id']}/runs", limit=5)["items"]
    if output is Output.json:
        print_json(found)
    else:
        print_job(found, runs)


@app.command("update")
def update(
    file: FileOption,
    job: Annotated[
        str | None,
        typer.Argument(help="The job to replace (default: the one named in the file)."),
    ] = None,
    patch: Annotated[
        bool, typer.Option("--patch", help="Change only the fields in the file (PATCH).")
    ] = False,
    output: OutputOption = Output.table,
) -> None:
    """Replace a job with the file's definition (PUT), or change some fields (--patch)."""
    body = read_document(file)
    with api() as client:
        ref = job or body.get("name")
        if not isinstance(ref, str):
            raise typer.BadParameter("name the job, or give it a `name` in the file")
        target = client.job(ref)
        method = "PATCH" if patch else "PUT"
        _show_saved(client.request(method, f"/jobs/{target['id']}", json=body), "updated", output)


@app.command("delete")
def delete(job: JobRef, output: OutputOption = Output.table) -> None:
    """Delete a job and all its runs (refused while one of them is in progress)."""
    with api() as client:
        found = client.job(job)
        client.request("DELETE", f"/jobs/{found['id']}")
    if output is Output.json:
        print_json({"deleted": found["id"], "name": found["name"]})
    else:
        stdout().print(f"deleted job {found['name']} ({found['id']}) and its runs")


def _set_enabled(job: str, enabled: bool, output: Output) -> None:
    with api() as client:
        found = client.job(job)
        saved = client.request("PATCH", f"/jobs/{found['id']}", json={"enabled": enabled})
    _show_saved(saved, "enabled" if enabled else "disabled", output)


@app.command("enable")
def enable(job: JobRef, output: OutputOption = Output.table) -> None:
    """Let the scheduler run the job on its schedule again."""
    _set_enabled(job, True, output)


@app.command("disable")
def disable(job: JobRef, output: OutputOption = Output.table) -> None:
    """Stop the scheduler from running the job (it can still be run by hand)."""
    _set_enabled(job, False, output)


def renderer_for(output: Output) -> Any:
    """How `--follow` shows a run: JSON lines, a live table on a terminal, or log lines."""

    def make(view: RunView) -> Renderer:
        if output is Output.json:
            return JsonRenderer(typer.echo)
        console = stdout()
        return LiveRenderer(console, view) if console.is_terminal else LineRenderer(console, view)

    return make


def follow_run(client: ApiClient, run_id: uuid.UUID, output: Output, job_name: str | None) -> None:
    """Follow the run and exit with its outcome's code."""
    raise typer.Exit(follow(client, run_id, renderer_for(output), job_name=job_name))


@app.command("run")
def run(
    job: JobRef,
    follow_it: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-F",
            help="Watch the run until it ends; exit 0 COMPLETED, 1 FAILED, 2 CANCELLED.",
        ),
    ] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="The same key again starts no second run (it names the same run)."),
    ] = None,
    output: OutputOption = Output.table,
) -> None:
    """Run a job now."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    with api() as client:
        found = client.job(job)
        accepted = client.request("POST", f"/jobs/{found['id']}/run", headers=headers)
        if follow_it:
            if output is not Output.json:
                stdout().print(f"started run {accepted['id']}", highlight=False)
            follow_run(client, uuid.UUID(accepted["id"]), output, found["name"])
    if output is Output.json:
        print_json(accepted)
    else:
        stdout().print(f"started run {accepted['id']} of job {found['name']}", highlight=False)
