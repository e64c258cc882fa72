"""What the API publishes, heard on a queue bound to `<ns>.events` before the request."""

from __future__ import annotations

import uuid

from common.events import JobDefinitionChanged, JobDue
from common.states import Trigger
from tests.integration.api.conftest import Client, Listener, job_body


async def test_manual_run_publishes_job_due(sqlite_client: Client, events: Listener) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body(enabled=False))).json()
    await events.next(JobDefinitionChanged)

    answer = await sqlite_client.post(f"/jobs/{job['id']}/run")
    assert answer.status_code == 202
    accepted = answer.json()
    assert accepted["job_definition_id"] == job["id"]
    assert accepted["status"] == "PENDING"

    due = await events.next(JobDue)
    assert due.run_id == uuid.UUID(accepted["id"])
    assert due.job_definition_id == uuid.UUID(job["id"])
    assert due.trigger is Trigger.MANUAL
    assert due.scheduled_for is None

    again = (await sqlite_client.post(f"/jobs/{job['id']}/run")).json()
    assert again["id"] != accepted["id"]
    assert (await events.next(JobDue)).run_id == uuid.UUID(again["id"])


async def test_unknown_job_run_publishes_nothing(sqlite_client: Client, events: Listener) -> None:
    assert (await sqlite_client.post(f"/jobs/{uuid.uuid4()}/run")).status_code == 404
    # A later event arrives first: nothing was published before it.
    job = (await sqlite_client.post("/jobs", json=job_body())).json()
    changed = await events.next(JobDefinitionChanged)
    assert changed.job_definition_id == uuid.UUID(job["id"])


async def test_changes_are_announced(sqlite_client: Client, events: Listener) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body())).json()
    job_id = uuid.UUID(job["id"])
    created = await events.next(JobDefinitionChanged)
    assert (created.job_definition_id, created.change) == (job_id, "created")

    await sqlite_client.put(f"/jobs/{job_id}", json=job_body(schedule="*/5 * * * *"))
    updated = await events.next(JobDefinitionChanged)
    assert (updated.job_definition_id, updated.change) == (job_id, "updated")

    await sqlite_client.delete(f"/jobs/{job_id}")
    deleted = await events.next(JobDefinitionChanged)
    assert (deleted.job_definition_id, deleted.change) == (job_id, "deleted")


async def test_rejected_changes_are_not_announced(sqlite_client: Client, events: Listener) -> None:
    first = (await sqlite_client.post("/jobs", json=job_body("first"))).json()
    await events.next(JobDefinitionChanged)
    assert (await sqlite_client.post("/jobs", json=job_body("first"))).status_code == 409
    assert (await sqlite_client.post("/jobs", json=job_body(schedule="x"))).status_code == 422
    bad_put = await sqlite_client.put(f"/jobs/{first['id']}", json=job_body(extractor_type="x"))
    assert bad_put.status_code == 422
    second = (await sqlite_client.post("/jobs", json=job_body("second"))).json()
    changed = await events.next(JobDefinitionChanged)
    assert changed.job_definition_id == uuid.UUID(second["id"])
    assert changed.change == "created"
