"""The bus is a public interface: an outside program publishes `JobDue` with plain aio-pika.

Whatever it sends, the coordinator keeps running: a good message starts a run, a bad one
is set aside on `<ns>.dead` with its reason.
"""

from __future__ import annotations

import csv
import json
import uuid
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from common.db.models import JobDefinition
from common.events import JobDue, RunFinished
from common.ids import run_id_from_message
from common.settings import Settings
from common.states import RunStatus, TaskStatus, Trigger
from common.topology import REASON_HEADER, dead_queue
from tests.harness import all_runs, engine_running, insert_job, publish_raw, read_run, tap

CSV_ROWS = 10


async def csv_job(settings: Settings, data_root: Path) -> JobDefinition:
    path = data_root / "in" / "people.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name"])
        writer.writerows([i, f"name-{i}"] for i in range(CSV_ROWS))
    return await insert_job(
        settings,
        name="people",
        extractor_type="csv",
        extractor_config={"path": "in/people.csv"},
        loader_type="duckdb",
        loader_config={"database": "out/wh.duckdb", "table": "people"},
        max_attempts=1,
    )


def body(**fields: object) -> bytes:
    return json.dumps({k: str(v) for k, v in fields.items()}).encode()


async def drain(settings: Settings, queue_name: str) -> list[AbstractIncomingMessage]:
    """Every message now in a queue, taken off it."""
    connection = await aio_pika.connect(settings.broker_url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=True)
        messages = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(message)
        return messages
    finally:
        await connection.close()


async def test_bad_messages_are_dead_lettered_and_a_good_one_runs(
    settings: Settings, data_root: Path
) -> None:
    job = await csv_job(settings, data_root)
    unknown_job = uuid.uuid4()
    not_json = b"this is { not json"
    unknown = body(job_definition_id=unknown_job)
    no_job_id = body(trigger="event")

    async with tap(settings) as t, engine_running(settings):
        for bad in (not_json, unknown, no_job_id):
            await publish_raw(settings, JobDue.routing_key, bad)
        await publish_raw(settings, JobDue.routing_key, body(job_definition_id=job.id))
        finished = await t.next(RunFinished, job_definition_id=job.id)
        dead = await drain(settings, dead_queue(settings.namespace))

    assert finished.status is RunStatus.COMPLETED, finished.error_message
    run, tasks = await read_run(settings, finished.run_id)
    assert run is not None
    assert run.status is RunStatus.COMPLETED
    assert run.trigger is Trigger.EVENT
    assert [task.status for task in tasks] == [TaskStatus.COMPLETED] * 2
    assert [r.id for r in await all_runs(settings)] == [finished.run_id]

    reasons = {
        message.body: str((message.headers or {}).get(REASON_HEADER, "")) for message in dead
    }
    assert len(dead) == 3, reasons
    assert set(reasons) == {not_json, unknown, no_job_id}
    assert "JobDue" in reasons[not_json]
    assert "json" in reasons[not_json].lower()
    assert "no known job" in reasons[unknown]
    assert str(unknown_job) in reasons[unknown]
    assert "job_definition_id" in reasons[no_job_id]
    assert "required" in reasons[no_job_id].lower()


async def test_outside_job_due_with_event_id_twice_is_one_run(
    settings: Settings, data_root: Path
) -> None:
    job = await csv_job(settings, data_root)
    event_id = uuid.uuid4()
    expected = run_id_from_message(job.id, str(event_id))
    later_event_id = uuid.uuid4()
    later = run_id_from_message(job.id, str(later_event_id))

    async with tap(settings) as t, engine_running(settings):
        duplicate = body(job_definition_id=job.id, event_id=event_id)
        await publish_raw(settings, JobDue.routing_key, duplicate)
        await publish_raw(settings, JobDue.routing_key, duplicate)
        first = await t.run_finished(expected)
        # The coordinator takes its queue in order: once a later trigger's run has
        # finished, both copies have been handled.
        await publish_raw(settings, JobDue.routing_key, duplicate)
        await publish_raw(
            settings, JobDue.routing_key, body(job_definition_id=job.id, event_id=later_event_id)
        )
        second = await t.run_finished(later)
        dead = await drain(settings, dead_queue(settings.namespace))

    assert first.status is RunStatus.COMPLETED, first.error_message
    assert second.status is RunStatus.COMPLETED, second.error_message
    assert sorted(r.id for r in await all_runs(settings)) == sorted([expected, later])
    run, tasks = await read_run(settings, expected)
    assert run is not None and run.status is RunStatus.COMPLETED
    assert len(tasks) == 2
    assert dead == []
