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


def on_heartbeat(event: WorkerHeartbeat, uow: UnitOfWork) -> None:
    worker = uow.get(Worker, event.worker_id)
    if worker is None:
        uow.new(
            Worker,
            id=event.worker_id,
            host=event.host,
            queues=list(event.queues),
            concurrency=event.concurrency,
            started_at=event.started_at,
            last_seen=uow.now,
            status=event.status,
        )
        return
    if worker.status is WorkerStatus.STOPPED:
        return
    worker.last_seen = max(worker.last_seen, uow.now)
    worker.status = event.status
    worker.queues = list(event.queues)
    worker.concurrency = event.concurrency
    if event.status is WorkerStatus.STOPPED:
        _retry_abandoned(event, uow)


def _retry_abandoned(event: WorkerHeartbeat, uow: UnitOfWork) -> None:
    """A stopping worker names the attempts it could not hand back to the broker."""
    for ref in event.running:
        task = uow.get(Task, ref.task_id)
        run = uow.get(JobRun, ref.run_id)
        if task is None or run is None or run.status in FINAL_RUN_STATUSES:
            continue
        if task.status is TaskStatus.RUNNING and task.attempt_count == ref.attempt:
            fail_attempt(uow, run, task, f"worker {event.worker_id} stopped", True)


def mark_lost_workers(uow: UnitOfWork, silence: timedelta) -> list[str]:
    """Workers silent for longer than `silence` become LOST; their running tasks retry."""
    stale = uow.select(
        Worker,
        Worker.status == WorkerStatus.ACTIVE,
        Worker.last_seen < uow.now - silence,
        for_update=True,
    )
    lost = [w.id for w in stale]
    if not lost:
        return []
    for worker in stale:
        worker.status = WorkerStatus.LOST
    candidates = uow.conn.execute(
        select(Task.id, Task.job_run_id).where(
            Task.worker_id.in_(lost), Task.status == TaskStatus.RUNNING
        )
    )
    for tid, run_id in candidates.all():
        # Lock the run, then look again: another worker may have taken the task over
        # (a redelivery after a kill) since the query above.
        runs = uow.select(JobRun, JobRun.id == run_id, for_update=True)
        tasks = uow.select(Task, Task.id == tid, refresh=True)
        if not runs or not tasks or runs[0].status in FINAL_RUN_STATUSES:
            continue
        run, task = runs[0], tasks[0]
        if task.status is not TaskStatus.RUNNING or task.worker_id not in lost:
            continue
        log.warning("worker %s lost; task %s gets a new attempt", task.worker_id, task.id)
        fail_attempt(uow, run, task, f"worker {task.worker_id} lost", retryable=True)
    return lost
