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

from sqlalchemy import BindParameter, bindparam, select

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

# Built once: a statement's cache key is costly to compute per batch.
_RUNS = JobRun.__table__
_JOBS = JobDefinition.__table__
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_RUNS_WITH_JOBS = (
    select(_RUNS, _JOBS)
    .join(_JOBS, _RUNS.c.job_definition_id == _JOBS.c.id)
    .where(_RUNS.c.id.in_(_IDS))
    .order_by(_RUNS.c.id)
    .with_for_update(of=_RUNS)
)
_TASKS_OF_RUNS = select(Task.__table__).where(Task.__table__.c.job_run_id.in_(_IDS))
_JOBS_BY_ID = select(_JOBS).where(_JOBS.c.id.in_(_IDS))
_STATES_OF_JOBS = select(JobState.__table__).where(JobState.__table__.c.job_definition_id.in_(_IDS))
_WORKERS_BY_ID = select(Worker.__table__).where(Worker.__table__.c.id.in_(_IDS))


def preload(uow: UnitOfWork, events: Sequence[tuple[Event, str | None]]) -> None:
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
    conn = uow.conn
    due_jobs = set(job_ids)
    if run_ids:
        # The runs with their jobs in one statement; only the runs are locked.
        found_runs: set[uuid.UUID] = set()
        width = len(_RUNS.columns)
        runs, jobs = [], []
        for row in conn.execute(_RUNS_WITH_JOBS, {"ids": sorted(run_ids)}):
            runs.append(dict(zip(_RUNS.columns.keys(), row[:width], strict=True)))
            jobs.append(dict(zip(_JOBS.columns.keys(), row[width:], strict=True)))
        for run in uow.load(JobRun, runs):
            found_runs.add(run.id)
        for job in uow.load(JobDefinition, jobs):
            job_ids.discard(job.id)
        uow.locked_runs.update(found_runs)
        _mark_absent(uow, JobRun, run_ids - found_runs)
        found_tasks: set[uuid.UUID] = set()
        if found_runs:
            rows = conn.execute(_TASKS_OF_RUNS, {"ids": list(found_runs)}).mappings()
            found_tasks = {task.id for task in uow.load(Task, rows)}
        # A run's tasks are all read: an id not among them does not exist yet (the load
        # task of a run whose extract is about to succeed).
        expected = {task_id(run_id, kind) for run_id in found_runs for kind in TaskType}
        _mark_absent(uow, Task, (task_ids | expected) - found_tasks)
    if job_ids:
        rows = conn.execute(_JOBS_BY_ID, {"ids": list(job_ids)}).mappings()
        found_jobs = {job.id for job in uow.load(JobDefinition, rows)}
        _mark_absent(uow, JobDefinition, job_ids - found_jobs)
    if due_jobs:
        # New runs dispatch their extract with the job's state; other readers of the
        # state (a retried extract, a completed load) read it when they need it.
        rows = conn.execute(_STATES_OF_JOBS, {"ids": list(due_jobs)}).mappings()
        uow.job_states.update({job_id: {} for job_id in due_jobs})
        for state in uow.load(JobState, rows):
            uow.job_states[state.job_definition_id][state.key] = state
    if worker_ids:
        rows = conn.execute(_WORKERS_BY_ID, {"ids": list(worker_ids)}).mappings()
        found_workers = {worker.id for worker in uow.load(Worker, rows)}
        _mark_absent(uow, Worker, worker_ids - found_workers)


def _mark_absent(uow: UnitOfWork, model: type[Base], keys: Iterable[Any]) -> None:
    uow.absent.update((model, key) for key in keys)
