"""Run and task reads. The run-coordinator writes these rows; here the test does."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from common.db.engine import make_engine, make_sessionmaker
from common.db.models import JobRun, Task
from common.settings import Settings
from common.states import RunStatus, TaskStatus, TaskType, Trigger
from tests.integration.api.conftest import Client, job_body

T0 = datetime(2030, 1, 1, 3, 0, tzinfo=UTC)


@pytest.fixture
async def session(settings: Settings) -> AsyncIterator[AsyncSession]:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as db_session:
            yield db_session
    finally:
        await engine.dispose()


def make_run(job_id: uuid.UUID, minute: int, status: RunStatus, trigger: Trigger) -> JobRun:
    return JobRun(
        id=uuid.uuid4(),
        job_definition_id=job_id,
        status=status,
        trigger=trigger,
        scheduled_for=T0 + timedelta(minutes=minute) if trigger is Trigger.SCHEDULE else None,
        created_at=T0 + timedelta(minutes=minute),
    )


def make_task(run: JobRun, task_type: TaskType, status: TaskStatus, second: int) -> Task:
    return Task(
        id=uuid.uuid4(),
        job_run_id=run.id,
        task_type=task_type,
        status=status,
        attempt_count=1,
        max_attempts=3,
        created_at=run.created_at + timedelta(seconds=second),
        started_at=run.created_at + timedelta(seconds=second + 1),
        worker_id="worker-1",
        rows_processed=42,
    )


async def test_runs_and_tasks(client: Client, session: AsyncSession) -> None:
    job_a = uuid.UUID((await client.post("/jobs", json=job_body("a"))).json()["id"])
    job_b = uuid.UUID((await client.post("/jobs", json=job_body("b"))).json()["id"])
    old = make_run(job_a, 0, RunStatus.COMPLETED, Trigger.SCHEDULE)
    old.started_at = T0 + timedelta(seconds=1)
    old.completed_at = T0 + timedelta(seconds=30)
    failed = make_run(job_a, 10, RunStatus.FAILED, Trigger.MANUAL)
    failed.error_message = "boom"
    newest = make_run(job_b, 20, RunStatus.RUNNING, Trigger.EVENT)
    load = make_task(old, TaskType.LOAD, TaskStatus.COMPLETED, 10)
    extract = make_task(old, TaskType.EXTRACT, TaskStatus.COMPLETED, 0)
    session.add_all([old, failed, newest])
    await session.flush()
    session.add_all([load, extract])
    await session.commit()

    runs = (await client.get("/job_runs")).json()
    assert runs["total"] == 3
    assert [r["id"] for r in runs["items"]] == [str(newest.id), str(failed.id), str(old.id)]
    first = runs["items"][2]
    assert first == {
        "id": str(old.id),
        "job_definition_id": str(job_a),
        "status": "COMPLETED",
        "trigger": "schedule",
        "scheduled_for": first["scheduled_for"],
        "started_at": first["started_at"],
        "completed_at": first["completed_at"],
        "error_message": None,
        "created_at": first["created_at"],
    }
    assert datetime.fromisoformat(first["scheduled_for"]) == T0
    assert datetime.fromisoformat(first["completed_at"]) == T0 + timedelta(seconds=30)

    async def ids(**params: str) -> list[str]:
        page = (await client.get("/job_runs", params=params)).json()
        return [r["id"] for r in page["items"]]

    assert await ids(job_definition_id=str(job_a)) == [str(failed.id), str(old.id)]
    assert await ids(status="FAILED") == [str(failed.id)]
    assert await ids(trigger="event") == [str(newest.id)]
    assert await ids(job_definition_id=str(job_b), status="FAILED") == []
    paged = (await client.get("/job_runs", params={"limit": 1, "offset": 1})).json()
    assert [r["id"] for r in paged["items"]] == [str(failed.id)]
    assert (paged["limit"], paged["offset"], paged["total"]) == (1, 1, 3)

    one = (await client.get(f"/job_runs/{failed.id}")).json()
    assert one["error_message"] == "boom"
    assert one["trigger"] == "manual"

    tasks = (await client.get(f"/job_runs/{old.id}/tasks")).json()
    assert tasks["total"] == 2
    assert [t["task_type"] for t in tasks["items"]] == ["EXTRACT", "LOAD"]
    assert (await client.get(f"/job_runs/{failed.id}/tasks")).json()["items"] == []

    task = (await client.get(f"/tasks/{extract.id}")).json()
    assert task == {
        "id": str(extract.id),
        "job_run_id": str(old.id),
        "task_type": "EXTRACT",
        "status": "COMPLETED",
        "attempt_count": 1,
        "max_attempts": 3,
        "error_message": None,
        "started_at": task["started_at"],
        "completed_at": None,
        "created_at": task["created_at"],
        "worker_id": "worker-1",
        "rows_processed": 42,
    }

    # Deleting a job deletes its runs and their tasks.
    assert (await client.delete(f"/jobs/{job_a}")).status_code == 204
    assert (await client.get(f"/job_runs/{old.id}")).status_code == 404
    assert (await client.get(f"/tasks/{extract.id}")).status_code == 404
    assert await ids() == [str(newest.id)]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "DONE"},
        {"trigger": "cron"},
        {"job_definition_id": "nope"},
        {"limit": "0"},
    ],
)
async def test_bad_run_filters_are_400(sqlite_client: Client, params: dict[str, str]) -> None:
    answer = await sqlite_client.get("/job_runs", params=params)
    assert answer.status_code == 400, answer.text
    [field] = params
    assert [e["field"] for e in answer.json()["errors"]] == [field]
