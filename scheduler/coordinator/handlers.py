"""The coordinator's logic: one function per event, over a unit of work.

Handlers know nothing of the transport. Each is idempotent: a duplicate event changes no
row, but it re-emits the follow-up message when that follow-up may never have left (the
state was committed, the publish was not confirmed), so at-least-once delivery plus these
handlers gives effectively-once runs.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import select

from common.db.models import JobDefinition, JobRun, Task
from common.errors import PoisonMessage
from common.events import (
    JobDue,
    RunFinished,
    StagedData,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
    utcnow,
)
from common.ids import run_id_from_message, task_id
from common.states import RunStatus, TaskStatus, TaskType, can_move_run, can_move_task
from common.topology import task_routing_key
from scheduler.coordinator.uow import UnitOfWork

log = logging.getLogger(__name__)


def resolve_run_id(event: JobDue, message_id: str | None) -> uuid.UUID:
    if event.run_id is not None:
        return event.run_id
    if "event_id" in event.model_fields_set:
        return run_id_from_message(event.job_definition_id, str(event.event_id))
    if message_id:
        return run_id_from_message(event.job_definition_id, message_id)
    # Nothing identifies this trigger: each delivery is a new run (documented for
    # outside publishers, who should send a run_id or event_id to be exactly-once).
    return uuid.uuid4()


async def _run_for_update(uow: UnitOfWork, run_id: uuid.UUID) -> JobRun | None:
    stmt = select(JobRun).where(JobRun.id == run_id).with_for_update()
    return (await uow.session.execute(stmt)).scalar_one_or_none()


async def _task(uow: UnitOfWork, tid: uuid.UUID) -> Task | None:
    return await uow.session.get(Task, tid)


def _dispatch(
    uow: UnitOfWork, job: JobDefinition, run: JobRun, task: Task, staged: StagedData | None
) -> None:
    is_extract = task.task_type is TaskType.EXTRACT
    uow.emit(
        TaskDispatched(
            task_id=task.id,
            run_id=run.id,
            job_definition_id=job.id,
            task_type=task.task_type,
            attempt=task.attempt_count + 1,
            plugin=job.extractor_type if is_extract else job.loader_type,
            config=job.extractor_config if is_extract else job.loader_config,
            staged=staged,
        ),
        task_routing_key(task.task_type),
    )


def _finish_run(uow: UnitOfWork, run: JobRun, status: RunStatus, error: str | None) -> None:
    if can_move_run(run.status, status):
        run.status = status
        run.completed_at = utcnow()
        run.error_message = error
    uow.emit(
        RunFinished(
            run_id=run.id,
            job_definition_id=run.job_definition_id,
            status=run.status,
            error_message=run.error_message,
        )
    )


async def on_job_due(event: JobDue, uow: UnitOfWork, message_id: str | None) -> None:
    run_id = resolve_run_id(event, message_id)
    job = await uow.session.get(JobDefinition, event.job_definition_id)
    if job is None:
        raise PoisonMessage(f"JobDue names no known job: {event.job_definition_id}")
    extract_id = task_id(run_id, TaskType.EXTRACT)
    run = await _run_for_update(uow, run_id)
    if run is None:
        run = JobRun(
            id=run_id,
            job_definition_id=job.id,
            status=RunStatus.PENDING,
            trigger=event.trigger,
            scheduled_for=event.scheduled_for,
        )
        task = Task(
            id=extract_id,
            job_run_id=run_id,
            task_type=TaskType.EXTRACT,
            status=TaskStatus.PENDING,
            attempt_count=0,
            max_attempts=job.max_attempts,
        )
        uow.session.add_all([run, task])
        await uow.session.flush()
        _dispatch(uow, job, run, task, None)
        return
    task_row = await _task(uow, extract_id)
    if task_row is not None and task_row.status is TaskStatus.PENDING:
        _dispatch(uow, job, run, task_row, None)


async def on_task_started(event: TaskStarted, uow: UnitOfWork) -> None:
    run = await _run_for_update(uow, event.run_id)
    task = await _task(uow, event.task_id)
    if run is None or task is None:
        log.warning("TaskStarted for unknown run or task %s, dropped", event.task_id)
        return
    if event.attempt <= task.attempt_count or not can_move_task(task.status, TaskStatus.RUNNING):
        return
    now = utcnow()
    task.status = TaskStatus.RUNNING
    task.attempt_count = event.attempt
    task.worker_id = event.worker_id
    task.started_at = task.started_at or now
    if run.status is RunStatus.PENDING:
        run.status = RunStatus.RUNNING
        run.started_at = now


async def on_task_succeeded(event: TaskSucceeded, uow: UnitOfWork) -> None:
    run = await _run_for_update(uow, event.run_id)
    task = await _task(uow, event.task_id)
    if run is None or task is None:
        log.warning("TaskSucceeded for unknown run or task %s, dropped", event.task_id)
        return
    job = await uow.session.get(JobDefinition, run.job_definition_id)
    if job is None:
        log.warning("run %s lost its job definition, dropped", run.id)
        return
    now = utcnow()
    if can_move_task(task.status, TaskStatus.COMPLETED) and run.status not in (
        RunStatus.COMPLETED,
        RunStatus.FAILED,
    ):
        task.status = TaskStatus.COMPLETED
        task.attempt_count = max(task.attempt_count, event.attempt)
        task.started_at = task.started_at or now
        task.completed_at = now
        task.rows_processed = event.rows
        task.output = event.staged.model_dump(mode="json") if event.staged else None
        if run.status is RunStatus.PENDING:
            run.status = RunStatus.RUNNING
            run.started_at = now
    elif task.status is not TaskStatus.COMPLETED:
        return
    if task.task_type is TaskType.EXTRACT:
        await _after_extract(uow, job, run, task)
    else:
        _finish_run(uow, run, RunStatus.COMPLETED, None)


async def _after_extract(uow: UnitOfWork, job: JobDefinition, run: JobRun, extract: Task) -> None:
    load_id = task_id(run.id, TaskType.LOAD)
    load = await _task(uow, load_id)
    if load is None:
        load = Task(
            id=load_id,
            job_run_id=run.id,
            task_type=TaskType.LOAD,
            status=TaskStatus.PENDING,
            attempt_count=0,
            max_attempts=job.max_attempts,
        )
        uow.session.add(load)
        await uow.session.flush()
    if load.status is TaskStatus.PENDING:
        staged = StagedData.model_validate(extract.output) if extract.output else None
        _dispatch(uow, job, run, load, staged)


async def on_task_failed(event: TaskFailed, uow: UnitOfWork) -> None:
    run = await _run_for_update(uow, event.run_id)
    task = await _task(uow, event.task_id)
    if run is None or task is None:
        log.warning("TaskFailed for unknown run or task %s, dropped", event.task_id)
        return
    if event.attempt < task.attempt_count:
        return
    if can_move_task(task.status, TaskStatus.FAILED):
        now = utcnow()
        task.status = TaskStatus.FAILED
        task.attempt_count = max(task.attempt_count, event.attempt)
        task.error_message = event.error
        task.started_at = task.started_at or now
        task.completed_at = now
    elif task.status is not TaskStatus.FAILED:
        return
    _finish_run(uow, run, RunStatus.FAILED, f"{task.task_type.value} failed: {task.error_message}")
