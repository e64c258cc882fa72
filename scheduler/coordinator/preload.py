"""Reads every row a batch of events will touch, in a handful of queries.

Without it each handler reads its run, task and job one statement at a time: on SQLite
every statement is a hop to aiosqlite's thread and back, and a batch of a hundred events
spent most of its time there. Runs are read `FOR UPDATE` in id order (a no-op on SQLite,
whose writer holds the whole database), so two coordinators never deadlock on a batch.

Every query looks rows up by primary key (a run's tasks by their derived ids, not by
their run), one table each, so that the plan is an index lookup whatever the planner
knows. One query joining runs, jobs and tasks was planned as hash joins over sequential
scans of `tasks` and `job_runs` when PostgreSQL had no statistics for them (autovacuum
off, or a new database before its first analyze): every batch then read the whole
history, and a run cost more the longer the history (`bench/cpu_per_run.py --store
postgres --bursts 10`: runs/s fell by a quarter over 30,000 runs, PostgreSQL's CPU per
run 0.23 ms median; now flat, 0.14 ms).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import BindParameter, bindparam, select

from common.db.models import Base, JobDefinition, JobRun, JobState, Task, Worker, table_of
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
_RUNS = table_of(JobRun)
_JOBS = table_of(JobDefinition)
_TASKS = table_of(Task)
_STATES = table_of(JobState)
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_RUNS_BY_ID = select(_RUNS).where(_RUNS.c.id.in_(_IDS)).order_by(_RUNS.c.id).with_for_update()
_TASKS_BY_ID = select(_TASKS).where(_TASKS.c.id.in_(_IDS))
_JOBS_BY_ID = select(_JOBS).where(_JOBS.c.id.in_(_IDS))
_STATES_OF_JOBS = select(_STATES).where(_STATES.c.job_definition_id.in_(_IDS))
_WORKERS_BY_ID = select(table_of(Worker)).where(table_of(Worker).c.id.in_(_IDS))


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
        runs = uow.load(JobRun, conn.execute(_RUNS_BY_ID, {"ids": sorted(run_ids)}).mappings())
        found_runs = {run.id for run in runs}
        job_ids.update(run.job_definition_id for run in runs)
        uow.locked_runs.update(found_runs)
        _mark_absent(uow, JobRun, run_ids - found_runs)
        # A run's tasks are all read: an id not among them does not exist yet (the load
        # task of a run whose extract is about to succeed), nor does one of a run that
        # does not exist or that is not its run's.
        expected = {task_id(run_id, kind) for run_id in found_runs for kind in TaskType}
        tasks = (
            uow.load(Task, conn.execute(_TASKS_BY_ID, {"ids": list(expected)}).mappings())
            if expected
            else []
        )
        _mark_absent(uow, Task, (task_ids | expected) - {task.id for task in tasks})
    if job_ids:
        jobs = uow.load(JobDefinition, conn.execute(_JOBS_BY_ID, {"ids": list(job_ids)}).mappings())
        _mark_absent(uow, JobDefinition, job_ids - {job.id for job in jobs})
    if due_jobs:
        # New runs dispatch their extract with the job's state, read here for the due
        # jobs only; other readers of it (a retried extract, a completed load) read it on
        # demand.
        uow.job_states.update({job_id: {} for job_id in due_jobs})
        states = conn.execute(_STATES_OF_JOBS, {"ids": list(due_jobs)}).mappings()
        for state in uow.load(JobState, states):
            uow.job_states[state.job_definition_id][state.key] = state
    if worker_ids:
        workers = conn.execute(_WORKERS_BY_ID, {"ids": list(worker_ids)}).mappings()
        found_workers = {worker.id for worker in uow.load(Worker, workers)}
        _mark_absent(uow, Worker, worker_ids - found_workers)


def _mark_absent(uow: UnitOfWork, model: type[Base], keys: Iterable[Any]) -> None:
    uow.absent.update((model, key) for key in keys)
