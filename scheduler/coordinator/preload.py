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

from sqlalchemy import BindParameter, Table, bindparam, select

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
_RUNS_WITH_JOBS_AND_TASKS = (
    select(_RUNS, _JOBS, _TASKS)
    .join(_JOBS, _RUNS.c.job_definition_id == _JOBS.c.id)
    .outerjoin(_TASKS, _TASKS.c.job_run_id == _RUNS.c.id)
    .where(_RUNS.c.id.in_(_IDS))
    .order_by(_RUNS.c.id)
    .with_for_update(of=_RUNS)
)
_JOBS_WITH_STATES = (
    select(_JOBS, _STATES)
    .outerjoin(_STATES, _STATES.c.job_definition_id == _JOBS.c.id)
    .where(_JOBS.c.id.in_(_IDS))
)
_WORKERS_BY_ID = select(table_of(Worker)).where(table_of(Worker).c.id.in_(_IDS))


def _split(row: Any, *tables: Table) -> list[dict[str, Any] | None]:
    """A joined row's values, one mapping per table (None for an outer join's miss)."""
    parts: list[dict[str, Any] | None] = []
    start = 0
    for table in tables:
        keys = table.columns.keys()
        values = row[start : start + len(keys)]
        start += len(keys)
        parts.append(None if values[0] is None else dict(zip(keys, values, strict=True)))
    return parts


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
        # Runs, their jobs and their tasks in one statement; only the runs are locked.
        runs: list[dict[str, Any]] = []
        jobs: list[dict[str, Any]] = []
        tasks: list[dict[str, Any]] = []
        for row in conn.execute(_RUNS_WITH_JOBS_AND_TASKS, {"ids": sorted(run_ids)}):
            run_values, job_values, task_values = _split(row, _RUNS, _JOBS, _TASKS)
            assert run_values is not None
            assert job_values is not None
            runs.append(run_values)
            jobs.append(job_values)
            if task_values is not None:
                tasks.append(task_values)
        found_runs = {run.id for run in uow.load(JobRun, runs)}
        job_ids -= {job.id for job in uow.load(JobDefinition, jobs)}
        found_tasks = {task.id for task in uow.load(Task, tasks)}
        uow.locked_runs.update(found_runs)
        _mark_absent(uow, JobRun, run_ids - found_runs)
        # A run's tasks are all read: an id not among them does not exist yet (the load
        # task of a run whose extract is about to succeed).
        expected = {task_id(run_id, kind) for run_id in found_runs for kind in TaskType}
        _mark_absent(uow, Task, (task_ids | expected) - found_tasks)
    if job_ids or due_jobs:
        # New runs dispatch their extract with the job's state, read with the job; other
        # readers of the state (a retried extract, a completed load) read it on demand.
        jobs, states = [], []
        for row in conn.execute(_JOBS_WITH_STATES, {"ids": list(job_ids | due_jobs)}):
            job_values, state_values = _split(row, _JOBS, _STATES)
            assert job_values is not None
            jobs.append(job_values)
            if state_values is not None:
                states.append(state_values)
        _mark_absent(uow, JobDefinition, job_ids - {j.id for j in uow.load(JobDefinition, jobs)})
        uow.job_states.update({job_id: {} for job_id in due_jobs})
        for state in uow.load(JobState, states):
            if state.job_definition_id in due_jobs:
                uow.job_states[state.job_definition_id][state.key] = state
    if worker_ids:
        rows = conn.execute(_WORKERS_BY_ID, {"ids": list(worker_ids)}).mappings()
        found_workers = {worker.id for worker in uow.load(Worker, rows)}
        _mark_absent(uow, Worker, worker_ids - found_workers)


def _mark_absent(uow: UnitOfWork, model: type[Base], keys: Iterable[Any]) -> None:
    uow.absent.update((model, key) for key in keys)
