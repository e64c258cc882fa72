"""api, scheduler, coordinator and worker as separate OS processes (`orc api`, …): they
share no memory, so a run that completes proves they talk only through the bus."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from common.events import RunFinished
from common.settings import Settings
from tests.e2e.test_api_flow import JOB, free_port, wait_healthy
from tests.harness import tap
from tests.integration.api.conftest import ADMIN_TOKEN, bearer
from tests.integration.engine.test_flow import write_csv

pytestmark = pytest.mark.slow

COMPONENTS = (
    ["api"],
    ["coordinator"],
    ["scheduler"],
    ["worker", "--queue", "extract", "--queue", "load"],
)


@pytest.fixture
def processes(
    sqlite_settings: Settings, tmp_path: Path
) -> Iterator[tuple[Settings, list[subprocess.Popen[bytes]]]]:
    settings = sqlite_settings.model_copy(update={"api_port": free_port()})
    env = {
        **os.environ,
        "ORC_DATABASE_URL": settings.database_url,
        "ORC_BROKER_URL": settings.broker_url,
        "ORC_NAMESPACE": settings.namespace,
        "ORC_STAGING_URL": settings.staging_url,
        "ORC_DATA_ROOT": str(settings.data_root),
        "ORC_API_PORT": str(settings.api_port),
        "ORC_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "orc", *args],
            env=env,
            cwd=tmp_path,
            stdout=(tmp_path / f"{args[0]}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for args in COMPONENTS
    ]
    try:
        yield settings, procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def test_components_as_processes_run_a_job(
    processes: tuple[Settings, list[subprocess.Popen[bytes]]], data_root: Path, tmp_path: Path
) -> None:
    settings, procs = processes
    write_csv(data_root / "in" / "cities.csv", 500)
    base = f"http://{settings.api_host}:{settings.api_port}"
    async with (
        tap(settings) as t,
        httpx.AsyncClient(base_url=base, headers=bearer(ADMIN_TOKEN)) as client,
    ):
        await wait_healthy(client)
        job = (await client.post("/jobs", json=JOB)).json()
        run_id = uuid.UUID((await client.post(f"/jobs/{job['id']}/run")).json()["id"])
        finished = await t.next(RunFinished, timeout=30, run_id=run_id)
        assert finished.status == "COMPLETED", finished.error_message

        with duckdb.connect(str(data_root / "out" / "wh.duckdb"), read_only=True) as con:
            loaded = con.execute("select count(distinct _orc_run_id), count(*) from cities")
            assert loaded.fetchone() == (1, 500)

        # A second job, writing its own file, gets a schedule later: the scheduler process
        # hears of it through a JobDefinitionChanged event and fires the next tick.
        other = {
            **JOB,
            "name": "every-2s",
            "loader_config": {"database": "out/s.duckdb", "table": "t"},
        }
        created = (await client.post("/jobs", json=other)).json()
        scheduled = await client.put(
            f"/jobs/{created['id']}", json={**other, "schedule": "*/2 * * * * *"}
        )
        assert scheduled.status_code == 200, scheduled.text
        tick = await t.next(RunFinished, timeout=30, job_definition_id=uuid.UUID(created["id"]))
        assert tick.status == "COMPLETED"
        run = (await client.get(f"/job_runs/{tick.run_id}")).json()
        assert run["trigger"] == "schedule" and run["scheduled_for"]

    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    codes = [proc.wait(timeout=20) for proc in procs]
    logs = {p.name: p.read_text() for p in tmp_path.glob("*.log")}
    assert codes == [0, 0, 0, 0], logs
