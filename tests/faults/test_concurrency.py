"""Two of everything that should be one: two schedulers and two coordinators at once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from common.events import JobDefinitionChanged, JobDue
from tests.faults.rig import RUNS, Rig

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.postgres]

TICKS = 4
"""Jobs fire at this many distinct ticks, a second apart."""
LEAD_SECONDS = 4


@pytest.mark.timeout(150)
async def test_two_schedulers_and_two_coordinators(rig: Rig) -> None:
    """Every job is scheduled to fire once, at a tick a few seconds ahead. Both schedulers
    fire every tick (or catch up on it if they start late): one run per tick, run by
    whichever coordinator gets the events, loaded once."""
    for _ in range(2):
        rig.cluster.scheduler()
        rig.cluster.coordinator()
    await rig.cluster.workers(2)
    rig.started = time.monotonic()
    now = datetime.now(UTC).replace(microsecond=0)
    ticks = [now + timedelta(seconds=LEAD_SECONDS + n) for n in range(TICKS)]
    runs = await rig.plan(RUNS, ticks=ticks)
    # Schedulers hear of new jobs through this event (and re-read every 2 s regardless).
    for run in runs:
        await rig.bus.publish(JobDefinitionChanged(job_definition_id=run.job_id, change="created"))
    await rig.settle(runs, 60)
    fired = len(rig.recorder.of(JobDue))
    rig.notes.append(f"JobDue fired {fired} times for {RUNS} ticks")
    await rig.finish("two schedulers, two coordinators", runs)
    assert fired > RUNS, "the schedulers did not both fire: nothing was tested"
