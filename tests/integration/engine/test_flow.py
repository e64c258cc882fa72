"""A job's run through coordinator and worker over the real broker, on both stores."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import duckdb

from common.events import JobDue, RunFinished
from common.settings import Settings
from common.states import RunStatus, TaskStatus, TaskType, Trigger
from tests.harness import engine_running, insert_job, publish, read_run, tap


def write_csv(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "score"])
        for i in range(rows):
            writer.writerow([i, f"name-{i}", i * 0.5])


async def test_job_due_runs_extract_then_load(settings: Settings, data_root: Path) -> None:
    write_csv(data_root / "in" / "people.csv", 250)
    job = await insert_job(
        settings,
        name="people",
        extractor_type="csv",
        extractor_config={"path": "in/people.csv"},
        loader_type="duckdb",
        loader_config={"database": "out/wh.duckdb", "table": "people"},
        max_attempts=1,
    )
    run_id = uuid.uuid4()
    async with tap(settings) as t, engine_running(settings):
        await publish(
            settings, JobDue(job_definition_id=job.id, run_id=run_id, trigger=Trigger.MANUAL)
        )
        finished = await t.run_finished(run_id)
    assert finished.status is RunStatus.COMPLETED, finished.error_message
    run, tasks = await read_run(settings, run_id)
    assert run is not None
    assert run.status is RunStatus.COMPLETED
    assert run.started_at is not None and run.completed_at is not None
    assert [t.task_type for t in tasks] == [TaskType.EXTRACT, TaskType.LOAD]
    assert all(t.status is TaskStatus.COMPLETED and t.attempt_count == 1 for t in tasks)
    assert [t.rows_processed for t in tasks] == [250, 250]
    with duckdb.connect(str(data_root / "out" / "wh.duckdb"), read_only=True) as con:
        assert con.execute("select count(*), sum(id) from people").fetchone() == (
            250,
            sum(range(250)),
        )


async def test_failure_marks_task_and_run_failed(sqlite_settings: Settings) -> None:
    settings = sqlite_settings
    job = await insert_job(
        settings,
        name="missing",
        extractor_type="csv",
        extractor_config={"path": "nope.csv"},
        loader_type="duckdb",
        loader_config={"database": "wh.duckdb", "table": "t"},
        max_attempts=1,
    )
    run_id = uuid.uuid4()
    async with tap(settings) as t, engine_running(settings):
        await publish(settings, JobDue(job_definition_id=job.id, run_id=run_id))
        finished: RunFinished = await t.run_finished(run_id)
    assert finished.status is RunStatus.FAILED
    run, tasks = await read_run(settings, run_id)
    assert run is not None and run.status is RunStatus.FAILED
    assert run.error_message and "nope.csv" in run.error_message
    assert [(t.task_type, t.status) for t in tasks] == [(TaskType.EXTRACT, TaskStatus.FAILED)]
