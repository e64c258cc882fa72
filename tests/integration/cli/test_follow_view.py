"""The view `--follow` builds from a run's events, and the live table it draws (no engine)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from rich.console import Console

from orc.client import StreamEvent
from orc.follow import FINAL, LineRenderer, RunView, render

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
RUN, EXTRACT, LOAD = "run-1", "task-e", "task-l"


def snapshot() -> StreamEvent:
    return StreamEvent(
        "snapshot",
        {
            "run": {"id": RUN, "status": "PENDING", "created_at": T0.isoformat()},
            "tasks": [
                {
                    "id": EXTRACT,
                    "task_type": "EXTRACT",
                    "status": "PENDING",
                    "attempt_count": 1,
                    "max_attempts": 3,
                    "rows_processed": None,
                }
            ],
        },
    )


def state(
    run: str, task: str | None = None, status: str | None = None, **more: object
) -> StreamEvent:
    kind = {EXTRACT: "EXTRACT", LOAD: "LOAD"}.get(task or "")
    data = {"run_id": RUN, "run_status": run, "task_id": task, "task_type": kind}
    data |= {"task_status": status, "attempt": 1, **more}
    return StreamEvent("state", data)


def test_the_view_follows_the_events() -> None:
    view = RunView(RUN, job_name="cities")
    assert view.apply(snapshot(), T0) == ["run PENDING (EXTRACT PENDING)"]
    assert view.apply(state("RUNNING", EXTRACT, "RUNNING"), T0 + timedelta(seconds=1)) == [
        "run RUNNING",
        "EXTRACT RUNNING (attempt 1)",
    ]
    progress = StreamEvent("progress", {"task_id": EXTRACT, "rows": 1500})
    assert view.apply(progress, T0) == ["EXTRACT 1,500 rows"]
    view.apply(state("RUNNING", EXTRACT, "RETRYING", error_message="timeout"), T0)
    assert view.tasks[EXTRACT].status == "RETRYING"
    assert view.tasks[EXTRACT].error == "timeout"
    view.apply(state("RUNNING", EXTRACT, "COMPLETED", rows=2000), T0 + timedelta(seconds=3))
    assert view.apply(state("RUNNING", LOAD, "RUNNING"), T0 + timedelta(seconds=3)) == [
        "LOAD RUNNING (attempt 1)"
    ]
    assert not view.finished
    finished = StreamEvent("finished", {"status": "COMPLETED", "error_message": None})
    assert view.apply(finished, T0 + timedelta(seconds=5)) == ["run COMPLETED"]
    assert view.finished and FINAL[view.status] == 0
    assert view.tasks[EXTRACT].rows == 2000
    assert view.elapsed(T0 + timedelta(minutes=9)) == 4.0

    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(render(view, T0 + timedelta(seconds=9)))
    text = console.export_text()
    assert "run run-1 of cities  COMPLETED  4.0s" in text
    assert "EXTRACT" in text and "2,000" in text and "LOAD" in text


def test_a_failed_run_shows_its_error() -> None:
    view = RunView(RUN)
    view.apply(snapshot(), T0)
    finished = StreamEvent("finished", {"status": "FAILED", "error_message": "no such file"})
    assert view.apply(finished, T0) == ["run FAILED: no such file"]
    assert FINAL[view.status] == 1
    console = Console(file=io.StringIO(), width=100, record=True)
    console.print(render(view, T0))
    assert "no such file" in console.export_text()


def test_lines_for_logs() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    view = RunView(RUN, job_name="cities")
    renderer = LineRenderer(console, view)
    for event in (snapshot(), state("CANCELLED"), StreamEvent("finished", {"status": "CANCELLED"})):
        renderer.show(view, event, view.apply(event, T0))
    renderer.close(view)
    lines = out.getvalue().splitlines()
    assert lines[0] == "following run run-1 of cities"
    assert lines[1].endswith(" run PENDING (EXTRACT PENDING)")
    assert lines[2].endswith(" run CANCELLED")
    # The end, after the notice that said it, is not a second line.
    assert [line for line in lines if line.endswith(" run CANCELLED")] == [lines[2]]
    assert lines[-1].startswith("run CANCELLED after ")
    assert FINAL["CANCELLED"] == 2
