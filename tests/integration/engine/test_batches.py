"""Messages that reach the coordinator together are handled as one batch: one bad message
among them is set aside with its reason and the others commit, and a duplicate within the
batch makes no second run."""

from __future__ import annotations

import json
import uuid

import pytest

from common.bus import connect_bus
from common.events import JobDue
from common.settings import Settings
from common.states import RunStatus
from common.topology import REASON_HEADER, dead_queue
from tests.harness import all_runs, engine_running, insert_job, publish, publish_raw, tap
from tests.integration.bus.test_outside_publisher import drain

GOOD_RUNS = 30


@pytest.mark.parametrize("with_bad", [True, False], ids=["one-bad", "all-good"])
async def test_a_bad_message_in_a_batch_is_set_aside_and_the_rest_commit(
    settings: Settings, with_bad: bool
) -> None:
    job = await insert_job(
        settings,
        name="batched",
        extractor_type="generate",
        extractor_config={"rows": 2},
        loader_type="null",
        loader_config={},
        max_attempts=1,
    )
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
