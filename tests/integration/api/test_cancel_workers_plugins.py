"""Cancelling a run (a request to the coordinator), the worker registry, the plugins."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import aio_pika
import pytest

from common.db.engine import make_engine, make_sessionmaker
from common.db.models import JobRun, Worker
from common.events import RunCancelRequested
from common.settings import Settings
from common.states import RunStatus, Trigger, WorkerStatus
from common.topology import events_exchange
from tests.integration.api.conftest import Client, job_body


async def _store(settings: Settings, *rows: object) -> None:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            session.add_all(rows)
            await session.commit()
    finally:
        await engine.dispose()


async def _add_run(settings: Settings, job_id: str, status: RunStatus) -> JobRun:
    run = JobRun(
        id=uuid.uuid4(),
        job_definition_id=uuid.UUID(job_id),
        status=status,
        trigger=Trigger.MANUAL,
        created_at=datetime.now(UTC),
    )
    await _store(settings, run)
    return run


async def test_cancel_publishes_a_request(sqlite_client: Client, sqlite_settings: Settings) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body())).json()
    running = await _add_run(sqlite_settings, job["id"], RunStatus.RUNNING)
    connection = await aio_pika.connect(sqlite_settings.broker_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(events_exchange(sqlite_settings.namespace))
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=RunCancelRequested.routing_key)

        answer = await sqlite_client.post(f"/job_runs/{running.id}/cancel")
        assert answer.status_code == 202, answer.text
        assert answer.json() == {
            "id": str(running.id),
            "job_definition_id": job["id"],
            "status": "RUNNING",
        }
        message = await queue.get(timeout=10, fail=True)
        assert message is not None
        request = RunCancelRequested.model_validate_json(message.body)
        assert request.run_id == running.id
    finally:
        await connection.close()


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED])
async def test_cancel_of_a_finished_run_is_409(
    sqlite_client: Client, sqlite_settings: Settings, status: RunStatus
) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body())).json()
    run = await _add_run(sqlite_settings, job["id"], status)
    answer = await sqlite_client.post(f"/job_runs/{run.id}/cancel")
    assert answer.status_code == 409
    assert status.value in answer.json()["detail"]


async def test_cancel_of_an_unknown_run_is_404(sqlite_client: Client) -> None:
    assert (await sqlite_client.post(f"/job_runs/{uuid.uuid4()}/cancel")).status_code == 404


async def test_workers(sqlite_client: Client, sqlite_settings: Settings) -> None:
    now = datetime.now(UTC)
    await _store(
        sqlite_settings,
        Worker(
            id="host-a:1",
            host="host-a",
            queues=["extract", "load"],
            concurrency=4,
            started_at=now - timedelta(hours=1),
            last_seen=now,
            status=WorkerStatus.ACTIVE,
        ),
        Worker(
            id="host-b:2",
            host="host-b",
            queues=["load"],
            concurrency=1,
            started_at=now - timedelta(hours=2),
            last_seen=now - timedelta(minutes=10),
            status=WorkerStatus.LOST,
        ),
    )
    page = (await sqlite_client.get("/workers")).json()
    assert page["total"] == 2
    assert [w["id"] for w in page["items"]] == ["host-a:1", "host-b:2"]
    first = page["items"][0]
    assert first == {
        "id": "host-a:1",
        "host": "host-a",
        "queues": ["extract", "load"],
        "concurrency": 4,
        "started_at": first["started_at"],
        "last_seen": first["last_seen"],
        "status": "ACTIVE",
    }
    lost = (await sqlite_client.get("/workers", params={"status": "LOST"})).json()
    assert [w["id"] for w in lost["items"]] == ["host-b:2"]
    assert (await sqlite_client.get("/workers", params={"status": "GONE"})).status_code == 400


async def test_plugins(sqlite_client: Client) -> None:
    catalog = (await sqlite_client.get("/plugins")).json()
    extractors = {p["name"]: p for p in catalog["extractors"]}
    loaders = {p["name"]: p for p in catalog["loaders"]}
    assert "csv" in extractors and "duckdb" in loaders
    assert extractors["csv"]["kind"] == "extractor"
    assert "path" in extractors["csv"]["config_schema"]["properties"]
    assert "path" in extractors["csv"]["config_schema"]["required"]
    assert {"database", "table"} <= set(loaders["duckdb"]["config_schema"]["required"])
