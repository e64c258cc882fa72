"""Reads every row a batch of events will touch, in a handful of queries.

Without it each handler reads its run, task and job one statement at a time: on SQLite
every statement is a hop to aiosqlite's thread and back, and a batch of a hundred events
spent most of its time there. Runs are read `FOR UPDATE` in id order (a no-op on SQLite,
whose writer holds the whole database), so two coordinators never deadlock on a batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select

from common.db.models import Base, JobDefinition, JobRun, JobState, Task, Worker
from common.events import (
    Event,
    JobDue,
    RunCancelRequested,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
    WorkerHeartbeat,
)
from common.ids import task_id
from common.states import TaskType
from scheduler.coordinator.handlers import resolve_run_id
from scheduler.coordinator.uow import UnitOfWork

_TaskEvent = TaskStarted | TaskSucceeded | TaskFailed


async def preload(uow: UnitOfWork, events: Sequence[tuple[Event, str | None]]) -> None:
    run_ids: set[uuid.UUID] = set()
    job_ids: set[uuid.UUID] = set()
    task_ids: set[uuid.UUID] = set()
    worker_ids: set[str] = set()
    for event, message_id in events:
        if isinstance(event, JobDue):
            job_ids.add(event.job_definition_id)
            run_ids.add(resolve_run_id(event, message_id))
        elif isinstance(event, _TaskEvent):
            run_ids.add(event.run_id)
            task_ids.add(event.task_id)
        elif isinstance(event, RunCancelRequested):
            run_ids.add(event.run_id)
        elif isinstance(event, WorkerHeartbeat):
            worker_ids.add(event.worker_id)
            for ref in event.running:
                run_ids.add(ref.run_id)
                task_ids.add(ref.task_id)
    session = uow.session
    due_jobs = set(job_ids)
    if run_ids:
        # The runs with their jobs in one statement; only the runs are locked.
        rows = await session.execute(
            select(JobRun, JobDefinition)
            .join(JobDefinition, JobRun.job_definition_id == JobDefinition.id)
            .where(JobRun.id.in_(run_ids))
            .order_by(JobRun.id)
            .with_for_update(of=JobRun)
        )
        found_runs: dict[uuid.UUID, JobRun] = {}
        for run, job in rows.all():
            found_runs[run.id] = run
            uow.hold(run, run.id)
            uow.hold(job, job.id)
            job_ids.discard(job.id)
        uow.locked_runs.update(found_runs)
        _mark_absent(uow, JobRun, run_ids - found_runs.keys())
        found_tasks: set[uuid.UUID] = set()
        if found_runs:
            tasks = await session.execute(select(Task).where(Task.job_run_id.in_(found_runs)))
            for task in tasks.scalars():
                uow.hold(task, task.id)
                found_tasks.add(task.id)
        # A run's tasks are all read: an id not among them does not exist yet (the load
        # task of a run whose extract is about to succeed).
        expected = {task_id(run_id, kind) for run_id in found_runs for kind in TaskType}
        _mark_absent(uow, Task, (task_ids | expected) - found_tasks)
    if job_ids:
        jobs = await session.execute(select(JobDefinition).where(JobDefinition.id.in_(job_ids)))
        found_jobs = set()
        for job in jobs.scalars():
            uow.hold(job, job.id)
            found_jobs.add(job.id)
        _mark_absent(uow, JobDefinition, job_ids - found_jobs)
    if due_jobs:
        # New runs dispatch their extract with the job's state; other readers of the
        # state (a retried extract, a completed load) read it when they need it.
        states = await session.execute(
            select(JobState).where(JobState.job_definition_id.in_(due_jobs))
        )
        uow.job_states.update({job_id: {} for job_id in due_jobs})
        for row in states.scalars():
            uow.job_states[row.job_definition_id][row.key] = row
    if worker_ids:
        workers = list(
            (await session.execute(select(Worker).where(Worker.id.in_(worker_ids)))).scalars()
        )
        for worker in workers:
            uow.hold(worker, worker.id)
        _mark_absent(uow, Worker, worker_ids - {worker.id for worker in workers})


def _mark_absent(uow: UnitOfWork, model: type[Base], keys: Iterable[Any]) -> None:
    uow.absent.update((model, key) for key in keys)
