"""`--follow`: watch a run through its event stream until it finishes.

The view is built from the stream alone: a `snapshot` first, then `state`, `progress`
and `finished` events. On a terminal it is a live table (tasks, attempts, rows moved,
elapsed); elsewhere one line per change; with `--output json` one JSON object per event.
A dropped stream is opened again: its new snapshot brings the view up to date.

The exit code tells how the run ended: 0 COMPLETED, 1 FAILED, 2 CANCELLED.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from orc.client import ApiClient, ApiError, StreamEvent
from orc.output import (
    EXIT_CANCELLED,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_OK,
    parse_time,
    rows,
    seconds,
    styled,
)

FINAL = {"COMPLETED": EXIT_OK, "FAILED": EXIT_FAILED, "CANCELLED": EXIT_CANCELLED}
APPEAR_TIMEOUT_SECONDS = 30.0
"""How long a run just triggered may take to be recorded by the coordinator."""
RECONNECTS = 5


@dataclass
class TaskView:
    id: str
    task_type: str
    status: str = "PENDING"
    attempt: int = 0
    max_attempts: int | None = None
    rows: int | None = None
    error: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    def elapsed(self, now: datetime) -> float | None:
        if self.started_at is None:
            return None
        return ((self.completed_at or now) - self.started_at).total_seconds()


@dataclass
class RunView:
    """What is known of a run, from its stream."""

    run_id: str
    job_name: str | None = None
    status: str = "PENDING"
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    tasks: dict[str, TaskView] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def elapsed(self, now: datetime) -> float | None:
        begun = self.started_at or self.created_at
        if begun is None:
            return None
        return ((self.completed_at or now) - begun).total_seconds()

    def apply(self, event: StreamEvent, now: datetime) -> list[str]:
        """Take in one event; returns what changed, as short lines for a log."""
        data = event.data if isinstance(event.data, dict) else {}
        if event.name == "snapshot":
            return self._snapshot(data)
        if event.name == "state":
            return self._state(data, now)
        if event.name == "progress":
            return self._progress(data)
        if event.name == "finished":
            return self._finished(data, now)
        return []

    def _snapshot(self, data: dict[str, Any]) -> list[str]:
        run = data.get("run") or {}
        self.status = str(run.get("status", self.status))
        self.error = run.get("error_message")
        self.created_at = parse_time(run.get("created_at"))
        self.started_at = parse_time(run.get("started_at"))
        self.completed_at = parse_time(run.get("completed_at"))
        for task in data.get("tasks") or []:
            view = self.tasks.setdefault(
                str(task["id"]), TaskView(str(task["id"]), str(task["task_type"]))
            )
            view.status = str(task["status"])
            view.attempt = int(task.get("attempt_count") or 0)
            view.max_attempts = task.get("max_attempts")
            view.rows = task.get("rows_processed")
            view.error = task.get("error_message")
            view.started_at = parse_time(task.get("started_at"))
            view.completed_at = parse_time(task.get("completed_at"))
        tasks = ", ".join(f"{t.task_type} {t.status}" for t in self.tasks.values())
        return [f"run {self.status}" + (f" ({tasks})" if tasks else "")]

    def _state(self, data: dict[str, Any], now: datetime) -> list[str]:
        lines: list[str] = []
        status = str(data.get("run_status", self.status))
        if status != self.status:
            self.status = status
            lines.append(f"run {status}")
            if status == "RUNNING" and self.started_at is None:
                self.started_at = now
        task_id = data.get("task_id")
        if task_id:
            view = self.tasks.setdefault(
                str(task_id), TaskView(str(task_id), str(data.get("task_type") or "TASK"))
            )
            task_status = str(data.get("task_status") or view.status)
            attempt = int(data.get("attempt") or view.attempt)
            if (task_status, attempt) != (view.status, view.attempt):
                line = f"{view.task_type} {task_status} (attempt {attempt})"
                if data.get("error_message") and task_status in ("FAILED", "RETRYING"):
                    line += f": {data['error_message']}"
                lines.append(line)
            if task_status == "RUNNING" and (view.status != "RUNNING" or view.started_at is None):
                view.started_at = now
                view.completed_at = None
            if task_status in FINAL and view.completed_at is None:
                view.completed_at = now
            view.status, view.attempt = task_status, attempt
            if data.get("rows") is not None:
                view.rows = int(data["rows"])
            view.error = data.get("error_message") or view.error
        return lines

    def _progress(self, data: dict[str, Any]) -> list[str]:
        view = self.tasks.get(str(data.get("task_id")))
        if view is None or data.get("rows") is None:
            return []
        view.rows = int(data["rows"])
        return [f"{view.task_type} {rows(view.rows)} rows"]

    def _finished(self, data: dict[str, Any], now: datetime) -> list[str]:
        status = str(data.get("status", self.status))
        # The run's last state notice usually said it already; the end repeats it only
        # to add the error.
        said = status == self.status and not data.get("error_message")
        self.status = status
        self.error = data.get("error_message") or self.error
        self.completed_at = self.completed_at or now
        return [] if said else [f"run {self.status}" + (f": {self.error}" if self.error else "")]


def render(view: RunView, now: datetime) -> Group:
    """The live display: a title line and one row per task."""
    title = Text.from_markup(
        f"run [bold]{view.run_id}[/bold]"
        + (f" of [bold]{view.job_name}[/bold]" if view.job_name else "")
        + f"  {styled(view.status)}  {seconds(view.elapsed(now))}"
    )
    tasks = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("", "TASK", "STATUS", "ATTEMPT", "ROWS", "ELAPSED", "ERROR"):
        tasks.add_column(column, overflow="fold")
    for task in view.tasks.values():
        marker: Any = Spinner("dots") if task.status == "RUNNING" else Text(" ")
        attempts = f"{task.attempt}/{task.max_attempts}" if task.max_attempts else str(task.attempt)
        tasks.add_row(
            marker,
            task.task_type,
            Text.from_markup(styled(task.status)),
            attempts,
            rows(task.rows),
            seconds(task.elapsed(now)),
            task.error or "",
        )
    parts: list[Any] = [title, tasks]
    if view.finished and view.error:
        parts.append(Text(view.error, style="red"))
    return Group(*parts)


class Renderer(Protocol):
    def show(self, view: RunView, event: StreamEvent, changes: list[str]) -> None: ...

    def close(self, view: RunView) -> None: ...


class LiveRenderer:
    """A table redrawn in place, for a terminal."""

    def __init__(self, console: Console, view: RunView) -> None:
        self._live = Live(
            render(view, _now()),
            console=console,
            refresh_per_second=4,
            get_renderable=lambda: render(view, _now()),
        )
        self._live.start()

    def show(self, view: RunView, event: StreamEvent, changes: list[str]) -> None:
        self._live.refresh()

    def close(self, view: RunView) -> None:
        self._live.refresh()
        self._live.stop()


class LineRenderer:
    """One line per change, for logs and pipes (progress at most once a second per task)."""

    def __init__(self, console: Console, view: RunView) -> None:
        self._console = console
        self._last_progress: dict[str, float] = {}
        name = f" of {view.job_name}" if view.job_name else ""
        console.print(f"following run {view.run_id}{name}", highlight=False)

    def show(self, view: RunView, event: StreamEvent, changes: list[str]) -> None:
        if event.name == "progress":
            task = str((event.data or {}).get("task_id"))
            last = self._last_progress.get(task, 0.0)
            if time.monotonic() - last < 1.0:
                return
            self._last_progress[task] = time.monotonic()
        for line in changes:
            self._console.print(f"{_now().astimezone():%H:%M:%S} {line}", highlight=False)

    def close(self, view: RunView) -> None:
        moved = ", ".join(f"{t.task_type} {rows(t.rows)} rows" for t in view.tasks.values())
        self._console.print(
            f"run {view.status} after {seconds(view.elapsed(_now()))}"
            + (f" ({moved})" if moved else ""),
            highlight=False,
        )


class JsonRenderer:
    """One JSON object per event (`{"event": name, "data": ...}`), for scripts."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit

    def show(self, view: RunView, event: StreamEvent, changes: list[str]) -> None:
        self._emit(json.dumps({"event": event.name, "data": event.data}))

    def close(self, view: RunView) -> None:
        return None


def _now() -> datetime:
    return datetime.now(UTC)


def wait_for_run(client: ApiClient, run_id: uuid.UUID, timeout: float) -> dict[str, Any]:
    """The run once the coordinator recorded it (a run just triggered is 404 a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            run: dict[str, Any] = client.get(f"/job_runs/{run_id}")
            return run
        except ApiError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _consume(client: ApiClient, run_id: uuid.UUID, view: RunView, renderer: Renderer) -> bool:
    """Read one stream of the run; whether the server ended it early (an `error` event:
    this client fell behind), so that a new stream should start from a fresh snapshot."""
    for event in client.stream(f"/job_runs/{run_id}/events"):
        if event.name == "error":
            return True
        renderer.show(view, event, view.apply(event, _now()))
        if event.name == "finished":
            break
    return False


def follow(
    client: ApiClient,
    run_id: uuid.UUID,
    make_renderer: Callable[[RunView], Renderer],
    job_name: str | None = None,
) -> int:
    """Follow a run to its end; the exit code of its final status."""
    wait_for_run(client, run_id, APPEAR_TIMEOUT_SECONDS)
    view = RunView(str(run_id), job_name=job_name)
    renderer = make_renderer(view)
    failures = 0
    try:
        while not view.finished:
            try:
                cut_short = _consume(client, run_id, view, renderer)
            except ApiError as exc:
                # An answer (404: the run was deleted) is final; a lost connection is not.
                if exc.status is not None:
                    raise
                cut_short = True
            failures = failures + 1 if cut_short else 0
            if failures > RECONNECTS:
                raise ApiError(f"the event stream of run {run_id} keeps failing")
            if failures:
                time.sleep(min(2.0 ** (failures - 1), 10.0))
    finally:
        renderer.close(view)
    return FINAL.get(view.status, EXIT_ERROR)
