"""A real run, watched over `GET /job_runs/{id}/events` from PENDING to COMPLETED, and a
real cancel: the engine's own components (API, coordinator, worker) over the real broker.

The worker is started only once the stream is open, so the stream starts on a PENDING
run and must show every change after it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from common.settings import Settings
from orc.client import StreamEvent
from tests.e2e.test_api_flow import JOB, wait_healthy
from tests.harness import engine_running
from tests.integration.api.conftest import ADMIN_TOKEN, bearer
from tests.integration.api.test_live import events_of
from tests.integration.engine.test_flow import write_csv


async def wait_recorded(client: httpx.AsyncClient, run_id: str) -> None:
    async with asyncio.timeout(10):
        while (await client.get(f"/job_runs/{run_id}")).status_code == 404:
            await asyncio.sleep(0.02)


async def test_a_run_streamed_from_pending_to_completed(
    api_settings: Settings, data_root: Path
) -> None:
    settings = api_settings
    write_csv(data_root / "in" / "cities.csv", 300)
    base = f"http://{settings.api_host}:{settings.api_port}"
    async with (
        engine_running(settings, ("api", "coordinator")),
        httpx.AsyncClient(base_url=base, headers=bearer(ADMIN_TOKEN), timeout=30) as client,
    ):
        await wait_healthy(client)
        job = (await client.post("/jobs", json=JOB)).json()
        run_id = (await client.post(f"/jobs/{job['id']}/run")).json()["id"]
        await wait_recorded(client, run_id)

        received: list[StreamEvent] = []
        async with client.stream("GET", f"/job_runs/{run_id}/events") as response:
            assert response.status_code == 200
            stream = events_of(response)
            snapshot = await anext(stream)
            assert snapshot.name == "snapshot"
            assert snapshot.data["run"]["status"] == "PENDING"
            async with engine_running(settings, ("worker",)), asyncio.timeout(30):
                received = [event async for event in stream]

    names = [e.name for e in received]
    assert names[-1] == "finished"
    assert received[-1].data["status"] == "COMPLETED"
    states = [e.data for e in received if e.name == "state"]
    run_statuses = [s["run_status"] for s in states]
    # PENDING (the snapshot) → RUNNING → COMPLETED, in order, each seen.
    assert "RUNNING" in run_statuses and run_statuses[-1] == "COMPLETED"
    assert run_statuses.index("RUNNING") < run_statuses.index("COMPLETED")
    tasks = {(s["task_type"], s["task_status"]) for s in states if s["task_id"]}
    assert {("EXTRACT", "RUNNING"), ("EXTRACT", "COMPLETED"), ("LOAD", "COMPLETED")} <= tasks
    loaded = [s for s in states if s["task_type"] == "LOAD" and s["task_status"] == "COMPLETED"]
    assert loaded[0]["rows"] == 300
    assert all(e.data["run_id"] == run_id for e in received)


async def test_a_cancelled_run_ends_its_stream(api_settings: Settings, data_root: Path) -> None:
    settings = api_settings
    write_csv(data_root / "in" / "cities.csv", 10)
    base = f"http://{settings.api_host}:{settings.api_port}"
    async with (
        engine_running(settings, ("api", "coordinator")),
        httpx.AsyncClient(base_url=base, headers=bearer(ADMIN_TOKEN), timeout=30) as client,
    ):
        await wait_healthy(client)
        job = (await client.post("/jobs", json=JOB)).json()
        run_id = (await client.post(f"/jobs/{job['id']}/run")).json()["id"]
        await wait_recorded(client, run_id)
        async with client.stream("GET", f"/job_runs/{run_id}/events") as response:
            stream = events_of(response)
            assert (await anext(stream)).data["run"]["status"] == "PENDING"
            cancel = await client.post(f"/job_runs/{run_id}/cancel")
            assert cancel.status_code == 202, cancel.text
            async with asyncio.timeout(20):
                received = [event async for event in stream]
        assert received[-1].name == "finished"
        assert received[-1].data["status"] == "CANCELLED"
        run = (await client.get(f"/job_runs/{run_id}")).json()
        assert run["status"] == "CANCELLED"
        again = await client.post(f"/job_runs/{run_id}/cancel")
        assert again.status_code == 409
        # With the run over, the job may be deleted.
        assert (await client.delete(f"/jobs/{job['id']}")).status_code == 204
