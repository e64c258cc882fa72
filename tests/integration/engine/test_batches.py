"""Messages that reach the coordinator together are handled as one batch: one bad message
among them is set aside with its reason and the others commit, and a duplicate within the
batch makes no second run."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from common.bus import connect_bus
from common.events import DueRun, JobDue, JobsDue, WorkerHeartbeat
from common.settings import Settings
from common.states import RunStatus, Trigger
from common.topology import REASON_HEADER, coordinator_queue, dead_queue
from tests.harness import all_runs, engine_running, generate_job, publish, publish_raw, tap
from tests.integration.bus.test_outside_publisher import drain

GOOD_RUNS = 30


@pytest.mark.parametrize("with_bad", [True, False], ids=["one-bad", "all-good"])
async def test_a_bad_message_in_a_batch_is_set_aside_and_the_rest_commit(
    settings: Settings, with_bad: bool
) -> None:
    job = await generate_job(settings, "batched", rows=2)
    unknown_job = uuid.uuid4()
    run_ids = [uuid.uuid4() for _ in range(GOOD_RUNS)]
    # Declared and filled before the coordinator starts: it takes them as one batch.
    await (await connect_bus(settings.broker_url, settings.namespace)).close()
    good = [JobDue(job_definition_id=job.id, run_id=r) for r in run_ids]
    duplicate = JobDue(job_definition_id=job.id, run_id=run_ids[0])
    await publish(settings, *good[:10], duplicate, *good[10:])
    unknown = json.dumps({"job_definition_id": str(unknown_job)}).encode()
    if with_bad:
        await publish_raw(settings, JobDue.routing_key, unknown)

    async with tap(settings) as t, engine_running(settings):
        finished = await t.finished_runs(GOOD_RUNS)
        dead = await drain(settings, dead_queue(settings.namespace))

    assert {f.run_id for f in finished} == set(run_ids)
    assert all(f.status is RunStatus.COMPLETED for f in finished)
    assert sorted(r.id for r in await all_runs(settings)) == sorted(run_ids)
    assert [m.body for m in dead] == ([unknown] if with_bad else [])
    if not with_bad:
        return
    reason = str((dead[0].headers or {}).get(REASON_HEADER, ""))
    assert "no known job" in reason and str(unknown_job) in reason


async def test_a_jobs_due_message_starts_each_run_and_sets_an_unknown_job_aside(
    settings: Settings,
) -> None:
    job = await generate_job(settings, "ticked", rows=1)
    tick = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    # More runs than the coordinator's batch in one message: it stays one transaction.
    first = [
        DueRun(job_definition_id=job.id, run_id=uuid.uuid4(), scheduled_for=tick)
        for _ in range(150)
    ]
    unknown = DueRun(job_definition_id=uuid.uuid4(), run_id=uuid.uuid4(), scheduled_for=tick)
    second = [DueRun(job_definition_id=job.id, run_id=uuid.uuid4()) for _ in range(20)]
    await (await connect_bus(settings.broker_url, settings.namespace)).close()
    await publish(settings, JobsDue(runs=tuple(first)), JobsDue(runs=(*second[:10], unknown)))
    await publish(settings, JobsDue(runs=tuple(second[10:]), trigger=Trigger.MANUAL))
    wanted = {r.run_id for r in (*first, *second)}

    async with tap(settings) as t, engine_running(settings):
        finished = await t.finished_runs(len(wanted))
        dead = await drain(settings, dead_queue(settings.namespace))

    assert {f.run_id for f in finished} == wanted
    assert all(f.status is RunStatus.COMPLETED for f in finished)
    runs = {r.id: r for r in await all_runs(settings)}
    assert set(runs) == wanted
    assert {runs[r.run_id].scheduled_for for r in first} == {tick}
    assert {runs[r.run_id].trigger for r in first} == {Trigger.SCHEDULE}
    assert {runs[r.run_id].trigger for r in second[10:]} == {Trigger.MANUAL}
    # The unknown job's run alone is set aside, as the JobDue it stood for.
    assert len(dead) == 1
    set_aside = JobDue.model_validate_json(dead[0].body)
    assert (set_aside.job_definition_id, set_aside.run_id) == (
        unknown.job_definition_id,
        unknown.run_id,
    )
    assert "no known job" in str((dead[0].headers or {}).get(REASON_HEADER, ""))
    # Every JobsDue was acked once its runs committed (a worker's last heartbeat may wait).
    left = await drain(settings, coordinator_queue(settings.namespace))
    assert [m.routing_key for m in left if m.routing_key != WorkerHeartbeat.routing_key] == []
