"""Processes that die or hang mid-work: kill -9 a worker in an extract and in a load,
kill -9 the coordinator while events pile up, freeze a worker (SIGSTOP: no goodbye, no
heartbeat, its connection open), and SIGTERM busy workers."""

from __future__ import annotations

import signal
import uuid

import pytest

from common.db.models import Worker
from common.events import TaskProgress, TaskStarted, TaskSucceeded
from common.ids import task_id
from common.states import TaskType, WorkerStatus
from common.topology import coordinator_queue
from tests.faults.rig import RUNS, JobShape, Rig

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.postgres]


def _mid_task(rig: Rig, worker_id: str, task_type: TaskType) -> set[uuid.UUID]:
    """Tasks of this type the worker is in the middle of (started, progress reported)."""
    of_type = {
        s.task_id
        for s in rig.recorder.of(TaskStarted, worker_id=worker_id)
        if s.task_id == task_id(s.run_id, task_type)
    }
    busy = {t for t, _ in rig.recorder.in_flight(worker_id)}
    progressed = {p.task_id for p in rig.recorder.of(TaskProgress) if p.rows > 0}
    return of_type & busy & progressed


async def _kill_worker_mid(rig: Rig, task_type: TaskType, shape: JobShape, scenario: str) -> None:
    # A load cut in its own task message, not one run right after its extract (which is
    # the extract's message, as the mid-extract scenario covers).
    separate = {"ORC_LOAD_AFTER_EXTRACT": "false"} if task_type is TaskType.LOAD else None
    rig.cluster.coordinator(env=separate)
    victim, survivor = await rig.cluster.workers(2)
    victim_id = rig.cluster.worker_id(victim)
    runs = await rig.plan(RUNS, shape)
    await rig.trigger(runs)
    await rig.recorder.expect(
        lambda: len(_mid_task(rig, victim_id, task_type)) >= 2,
        30,
        f"{victim.name} in the middle of two {task_type.value}s",
    )
    cut = _mid_task(rig, victim_id, task_type)
    await rig.cluster.kill(victim)
    rig.notes.append(f"kill -9 {victim.name} inside {len(cut)} {task_type.value.lower()}s")
    await rig.finish(scenario, runs)
    survivor_id = rig.cluster.worker_id(survivor)
    for tid in cut:
        again = [s for s in rig.recorder.starts(tid) if s.worker_id == survivor_id]
        assert again, f"task {tid} cut by the kill was not run again by {survivor.name}"


@pytest.mark.timeout(150)
async def test_kill_worker_in_the_middle_of_an_extract(rig: Rig) -> None:
    await _kill_worker_mid(
        rig, TaskType.EXTRACT, JobShape(extract_pause=0.4), "kill -9 worker mid-extract"
    )


@pytest.mark.timeout(150)
async def test_kill_worker_in_the_middle_of_a_load(rig: Rig) -> None:
    await _kill_worker_mid(rig, TaskType.LOAD, JobShape(load_pause=1.5), "kill -9 worker mid-load")


@pytest.mark.timeout(150)
async def test_kill_coordinator_while_events_pile_up_then_restart(rig: Rig) -> None:
    first = rig.cluster.coordinator()
    await rig.cluster.workers(2)
    runs = await rig.plan(RUNS, JobShape(extract_pause=0.2))
    early, late = runs[: RUNS // 2], runs[RUNS // 2 :]
    await rig.trigger(early)
    await rig.recorder.expect(lambda: rig.finished(early) >= 3, 60, "three runs finished")
    await rig.cluster.kill(first)
    # With no coordinator, new triggers and the outcomes of the tasks in flight pile up.
    await rig.trigger(late)
    await rig.recorder.expect(
        lambda: not rig.recorder.in_flight(), 30, "every started attempt reported its outcome"
    )
    piled = await rig.queue_depth(coordinator_queue(rig.settings.namespace))
    rig.notes.append(f"kill -9 coordinator, {piled} events piled up, restarted")
    rig.cluster.coordinator()
    await rig.finish("kill -9 coordinator, restart", runs)


@pytest.mark.timeout(150)
async def test_worker_lost_without_goodbye(rig: Rig) -> None:
    """SIGSTOP: the worker's heartbeats stop while its connection stays open. The
    coordinator's lost-worker check (3 s here) gives the tasks it started a new attempt;
    the messages it held without starting them come back when the broker drops the hung
    connection (AMQP heartbeat 15 s: within about 30-45 s), hence the longer bound."""
    rig.cluster.coordinator(env={"ORC_LOST_AFTER_HEARTBEATS": "6"})
    hung, other = await rig.cluster.workers(2, concurrency=3)
    hung_id, other_id = rig.cluster.worker_id(hung), rig.cluster.worker_id(other)
    runs = await rig.plan(RUNS, JobShape(extract_pause=0.5))
    await rig.trigger(runs)
    # Frozen with every slot busy it should hold no message it has not started (but it
    # does: HELD_NOT_STARTED).
    await rig.recorder.expect(
        lambda: len(rig.recorder.in_flight(hung_id)) == 3, 30, f"{hung.name} running 3 tasks"
    )
    hung.send(signal.SIGSTOP)
    held = rig.recorder.in_flight(hung_id)
    rig.notes.append(f"SIGSTOP {hung.name} holding {len(held)} tasks")
    await rig.recorder.expect(
        lambda: all(
            any(s.worker_id == other_id and s.attempt > a for s in rig.recorder.starts(t))
            for t, a in held
        ),
        30,
        "every task of the hung worker started again elsewhere, as a new attempt",
    )
    async with rig.session() as session:
        registered = await session.get(Worker, hung_id)
        assert registered is not None and registered.status is WorkerStatus.LOST
    await rig.finish("worker lost without goodbye", runs, timeout=75)


@pytest.mark.timeout(150)
async def test_sigterm_to_busy_workers(rig: Rig) -> None:
    """One worker's grace period outlasts its tasks: they finish there, once. Another's is
    too short: its tasks go back to the queue un-acked and run elsewhere, same attempt."""
    rig.cluster.coordinator()
    patient = rig.cluster.worker(3, env={"ORC_WORKER_GRACE_SECONDS": "20"})
    hasty = rig.cluster.worker(3, env={"ORC_WORKER_GRACE_SECONDS": "0.3"})
    keeper = rig.cluster.worker(4)
    await rig.cluster.ready(patient, hasty, keeper)
    patient_id, hasty_id = rig.cluster.worker_id(patient), rig.cluster.worker_id(hasty)
    runs = await rig.plan(RUNS, JobShape(extract_pause=0.6))
    await rig.trigger(runs)
    await rig.recorder.expect(
        lambda: (
            len(rig.recorder.in_flight(patient_id)) == len(rig.recorder.in_flight(hasty_id)) == 3
        ),
        30,
        "both workers running 3 tasks",
    )
    finishing, handed_back = rig.recorder.in_flight(patient_id), rig.recorder.in_flight(hasty_id)
    patient.send(signal.SIGTERM)
    hasty.send(signal.SIGTERM)
    assert await hasty.wait(15) == 0, hasty.tail()
    assert await patient.wait(30) == 0, patient.tail()
    rig.notes.append(
        f"SIGTERM: {len(finishing)} tasks finished in grace, {len(handed_back)} handed back"
    )
    await rig.finish("SIGTERM busy workers", runs)
    succeeded = {(e.task_id, e.attempt) for e in rig.recorder.of(TaskSucceeded)}
    for tid, attempt in finishing:
        assert [s.worker_id for s in rig.recorder.starts(tid)][:1] == [patient_id]
        assert (tid, attempt) in succeeded
    for tid, attempt in handed_back:
        starts = rig.recorder.starts(tid)
        assert starts[0].worker_id == hasty_id
        assert any(s.worker_id != hasty_id and s.attempt == attempt for s in starts[1:]), starts
