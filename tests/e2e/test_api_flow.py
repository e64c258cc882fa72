"""The issue's user story through the REST API: create a CSV → DuckDB job, trigger it,
watch its run and tasks complete, find the rows in DuckDB. On both state stores."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import duckdb
import httpx

from common.events import RunFinished, TaskStarted
from common.settings import Settings
from tests.harness import engine_running, tap
from tests.integration.api.conftest import ADMIN_TOKEN, bearer
from tests.integration.engine.test_flow import write_csv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_healthy(client: httpx.AsyncClient, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


JOB = {
    "name": "cities",
    "extractor_type": "csv",
    "extractor_config": {"path": "in/cities.csv"},
    "loader_type": "duckdb",
    "loader_config": {"database": "out/wh.duckdb", "table": "cities", "mode": "append"},
    "max_attempts": 2,
}


async def test_trigger_through_api_to_rows_in_duckdb(
    api_settings: Settings, data_root: Path
) -> None:
    settings = api_settings
    write_csv(data_root / "in" / "cities.csv", 1234)
    base = f"http://{settings.api_host}:{settings.api_port}"
    async with (
        tap(settings, "run.finished", "task.started") as t,
        engine_running(settings, ("api", "coordinator", "worker")),
        httpx.AsyncClient(base_url=base, headers=bearer(ADMIN_TOKEN)) as client,
    ):
        await wait_healthy(client)
        created = await client.post("/jobs", json=JOB)
        assert created.status_code == 201, created.text
        job = created.json()
        assert job["timezone"] == "UTC" and job["enabled"] is True

        triggered = await client.post(f"/jobs/{job['id']}/run")
        assert triggered.status_code == 202
        run_id = uuid.UUID(triggered.json()["id"])

        # The run is recorded by the coordinator, another component, within a second.
        async with asyncio.timeout(1.0):
            while (await client.get(f"/job_runs/{run_id}")).status_code == 404:
                await asyncio.sleep(0.02)

        started = await t.next(TaskStarted, run_id=run_id)
        finished = await t.next(RunFinished, run_id=run_id)
        assert started.attempt == 1
        assert finished.status == "COMPLETED", finished.error_message

        run = (await client.get(f"/job_runs/{run_id}")).json()
        assert run["status"] == "COMPLETED"
        assert run["trigger"] == "manual"
        assert run["job_definition_id"] == job["id"]
        assert run["started_at"] and run["completed_at"]
        tasks = (await client.get(f"/job_runs/{run_id}/tasks")).json()["items"]
        assert sorted(t["task_type"] for t in tasks) == ["EXTRACT", "LOAD"]
        assert all(t["status"] == "COMPLETED" for t in tasks)
        one = (await client.get(f"/tasks/{tasks[0]['id']}")).json()
        assert one["id"] == tasks[0]["id"] and one["attempt_count"] == 1

        listed = (await client.get("/job_runs", params={"job_definition_id": job["id"]})).json()
        assert listed["total"] == 1 and listed["items"][0]["id"] == str(run_id)

    with duckdb.connect(str(data_root / "out" / "wh.duckdb"), read_only=True) as con:
        count, total = con.execute("select count(*), sum(id) from cities").fetchone() or (0, 0)
    assert (count, total) == (1234, sum(range(1234)))
