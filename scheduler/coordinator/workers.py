"""The worker registry: heartbeats keep a worker ACTIVE; silence makes it LOST, and the
tasks it was running get a new attempt."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from common.db.models import JobRun, Task, Worker
from common.events import WorkerHeartbeat
from common.states import FINAL_RUN_STATUSES, TaskStatus, WorkerStatus
from scheduler.coordinator.handlers import fail_attempt
from scheduler.coordinator.uow import UnitOfWork

log = logging.getLogger(__name__)


async def on_heartbeat(event: WorkerHeartbeat, uow: UnitOfWork) -> None:
    worker = await uow.get(Worker, event.worker_id)
    if worker is None:
        worker = Worker(
            id=event.worker_id,
            host=event.host,
            queues=list(event.queues),
            concurrency=event.concurrency,
            started_at=event.started_at,
            last_seen=uow.now,
            status=event.status,
        )
        uow.add(worker, worker.id)
        return
    if worker.status is WorkerStatus.STOPPED:
        return
    worker.last_seen = max(worker.last_seen, uow.now)
    worker.status = event.status
    worker.queues = list(event.queues)
    worker.concurrency = event.concurrency
    if event.status is WorkerStatus.STOPPED:
        await _retry_abandoned(event, uow)


async def _retry_abandoned(event: WorkerHeartbeat, uow: UnitOfWork) -> None:
    """A stopping worker names the attempts it could not hand back to the broker."""
    for ref in event.running:
        task = await uow.get(Task, ref.task_id)
        run = await uow.get(JobRun, ref.run_id)
        if task is None or run is None or run.status in FINAL_RUN_STATUSES:
            continue
        if task.status is TaskStatus.RUNNING and task.attempt_count == ref.attempt:
            await fail_attempt(uow, run, task, f"worker {event.worker_id} stopped", True)


async def mark_lost_workers(uow: UnitOfWork, silence: timedelta) -> list[str]:
    """Workers silent for longer than `silence` become LOST; their running tasks retry."""
    stale = (
        await uow.session.execute(
            select(Worker)
            .where(Worker.status == WorkerStatus.ACTIVE, Worker.last_seen < uow.now - silence)
            .with_for_update()
        )
    ).scalars()
    lost = [w.id for w in stale]
    if not lost:
        return []
    for worker_id in lost:
        worker = await uow.session.get(Worker, worker_id)
        if worker is not None:
            worker.status = WorkerStatus.LOST
    candidates = await uow.session.execute(
        select(Task.id, Task.job_run_id).where(
            Task.worker_id.in_(lost), Task.status == TaskStatus.RUNNING
        )
    )
    for tid, run_id in candidates.all():
        # Lock the run, then look again: another worker may have taken the task over
        # (a redelivery after a kill) since the query above.
        run = (
            await uow.session.execute(select(JobRun).where(JobRun.id == run_id).with_for_update())
        ).scalar_one_or_none()
        task = await uow.session.get(Task, tid, populate_existing=True)
        if run is None or task is None or run.status in FINAL_RUN_STATUSES:
            continue
        if task.status is not TaskStatus.RUNNING or task.worker_id not in lost:
            continue
        log.warning("worker %s lost; task %s gets a new attempt", task.worker_id, task.id)
        await fail_attempt(uow, run, task, f"worker {task.worker_id} lost", retryable=True)
    return lost
