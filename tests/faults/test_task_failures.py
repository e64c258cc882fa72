"""Tasks that fail on their own: one that always fails (retries through the delay ladder
until the attempts run out) and one that runs over its timeout."""

from __future__ import annotations

import itertools

import pytest

from common.events import TaskFailed, TaskStarted
from common.ids import task_id
from common.states import RunStatus, TaskType
from common.topology import pick_rung
from scheduler.coordinator.retry import RetryPolicy
from tests.faults.plugins import FAILURE_TEXT
from tests.faults.rig import RUNS, JobShape, Rig

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.postgres]

ATTEMPTS = 3
# Back-off 1 s, then 2 s: the ladder's 1 s rung, then its 5 s rung.
BACKOFF = RetryPolicy(base_seconds=1.0, factor=2.0, jitter=0.0)
DELAY_LADDER_MATCHES_ALL = (
    "engine bug: common/topology.py binds each delay rung to the headers exchange "
    "<ns>.delay with {'x-match': 'all', 'x-orc-delay': '<n>s'}, but RabbitMQ ignores "
    "binding arguments that start with 'x-' when matching: every rung takes every retry. "
    "A retry is dispatched from all six rungs (after 1 s, 5 s, 30 s, 2 min, 10 min, 1 h), "
    "so a 5 s back-off is over after 1 s and each attempt runs up to six times"
)
# The gap also holds the coordinator's turn and the worker's pick-up.
SLACK_SECONDS = 3.0


@pytest.mark.timeout(150)
async def test_task_that_always_fails_exhausts_its_retries(rig: Rig) -> None:
    rig.cluster.coordinator()
    await rig.cluster.workers(2)
    shape = JobShape(
        fail=True,
        max_attempts=ATTEMPTS,
        backoff_seconds=BACKOFF.base_seconds,
        backoff_factor=BACKOFF.factor,
        expect=RunStatus.FAILED,
        error=f"failed after {ATTEMPTS} attempts: TransientError: {FAILURE_TEXT}",
    )
    runs = await rig.plan(RUNS, shape)
    await rig.trigger(runs)
    await rig.settle(runs, 60)
    wanted = [pick_rung(BACKOFF.backoff(n)) for n in range(1, ATTEMPTS)]
    gaps: list[list[float]] = []
    for run in runs:
        tid = task_id(run.run_id, TaskType.EXTRACT)
        starts = {s.attempt: s for s in reversed(rig.recorder.of(TaskStarted, task_id=tid))}
        failures = {f.attempt: f for f in rig.recorder.of(TaskFailed, task_id=tid)}
        gaps.append(
            [
                (starts[n + 1].occurred_at - failures[n].occurred_at).total_seconds()
                for n in range(1, ATTEMPTS)
                if n in failures and n + 1 in starts
            ]
        )
    flat = list(itertools.chain.from_iterable(gaps))
    rig.notes.append(
        f"back-off gaps {min(flat):.1f}-{max(flat):.1f}s, wanted rungs {wanted}s" if flat else ""
    )
    await rig.finish("task that always fails", runs)
    for run_gaps in gaps:
        assert len(run_gaps) == ATTEMPTS - 1, gaps
        for gap, rung in zip(run_gaps, wanted, strict=True):
            assert rung - 0.1 <= gap <= rung + SLACK_SECONDS, (gaps, wanted)


@pytest.mark.timeout(150)
async def test_tasks_over_their_timeout(rig: Rig) -> None:
    """Attempts that would run 30 s are stopped after 1 s, twice, and their runs fail; runs
    of a quick job beside them are not held up."""
    rig.cluster.coordinator()
    await rig.cluster.workers(2)
    slow = await rig.plan(
        RUNS,
        JobShape(
            extract_pause=30,
            timeout_seconds=1,
            max_attempts=2,
            expect=RunStatus.FAILED,
            error="failed after 2 attempts: TimeoutError: timed out after 1s",
        ),
    )
    quick = await rig.plan(RUNS // 2, JobShape(timeout_seconds=20))
    await rig.trigger([*slow, *quick])
    await rig.finish("task over its timeout", [*slow, *quick])
