"""The coordinator's logic: one function per event, over a unit of work.

Handlers know nothing of the transport. Each is idempotent: an event that does not match
the current state (a duplicate, an outcome of a superseded attempt, anything about a run
already finished) changes nothing. What a handler emits is written to the outbox in the
same transaction, so a committed transition never loses its follow-up message.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from common.db.models import JobDefinition, JobRun, JobState, Task
from common.errors import PoisonMessage
from common.events import (
    JobDue,
    LoadOrder,
    RunCancelled,
    RunCancelRequested,
    RunFinished,
    StagedData,
    StateChanged,
    TaskDispatched,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from common.ids import new_id, run_id_from_message, task_id
from common.states import (
    FINAL_RUN_STATUSES,
    FINAL_TASK_STATUSES,
    RunStatus,
    TaskStatus,
    TaskType,
    can_move_run,
)
from common.topology import task_routing_key
from scheduler.coordinator.retry import RetryPolicy
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
    return new_id()


def retry_policy(job: JobDefinition) -> RetryPolicy:
    return RetryPolicy(
        base_seconds=job.retry_backoff_seconds,
        factor=job.retry_backoff_factor,
        max_seconds=job.retry_backoff_max_seconds,
        jitter=job.retry_jitter,
    )


def _run_for_update(uow: UnitOfWork, run_id: uuid.UUID) -> JobRun | None:
    if run_id in uow.locked_runs or (JobRun, run_id) in uow.absent:
        return uow.get(JobRun, run_id)
    found = uow.select(JobRun, JobRun.id == run_id, for_update=True)
    return found[0] if found else None


def _job_state(uow: UnitOfWork, job_id: uuid.UUID) -> dict[str, Any]:
    return {key: row.value for key, row in (uow.job_state(job_id)).items()}


def _notice(uow: UnitOfWork, run: JobRun, task: Task | None = None) -> None:
    # Read from the rows' `__dict__` (bare rows hold every column they were read or made
    # with, see `UnitOfWork.new`): at nine notices a run, the ORM's attribute descriptors
    # were a tenth of the coordinator's transaction time.
    r = vars(run)
    t = vars(task) if task is not None else {}
    uow.emit(
        StateChanged(
            job_definition_id=r["job_definition_id"],
            run_id=r["id"],
            run_status=r["status"],
            task_id=t.get("id"),
            task_type=t.get("task_type"),
            task_status=t.get("status"),
            attempt=t.get("attempt_count"),
            rows=t.get("rows_processed"),
            error_message=(t if task is not None else r).get("error_message"),
        )
    )


def _dispatch(
    uow: UnitOfWork,
    job: JobDefinition,
    run: JobRun,
    task: Task,
    staged: StagedData | None,
    delay_rung: int | None = None,
) -> None:
    """Send the task's next attempt to its queue (through a delay rung for a retry)."""
    is_extract = task.task_type is TaskType.EXTRACT
    task.attempt_count += 1
    task.next_attempt_at = uow.now + timedelta(seconds=delay_rung or 0)
    plugin = job.extractor_type if is_extract else job.loader_type
    raw_config = job.extractor_config if is_extract else job.loader_config
    then = None
    if is_extract and uow.load_after_extract:
        then = LoadOrder(
            task_id=task_id(run.id, TaskType.LOAD),
            plugin=job.loader_type,
            config=uow.seal(TaskType.LOAD, job.loader_type, job.loader_config),
            timeout_seconds=job.timeout_seconds,
        )
    uow.emit(
        TaskDispatched(
            task_id=task.id,
            run_id=run.id,
            job_definition_id=job.id,
            task_type=task.task_type,
            attempt=task.attempt_count,
            plugin=plugin,
            config=uow.seal(task.task_type, plugin, raw_config),
            staged=staged,
            state=_job_state(uow, job.id) if is_extract else {},
            timeout_seconds=job.timeout_seconds,
            then=then,
        ),
        task_routing_key(task.task_type),
        delay_rung,
    )


def _finish_run(uow: UnitOfWork, run: JobRun, status: RunStatus, error: str | None) -> None:
    if not can_move_run(run.status, status):
        return
    run.status = status
    run.completed_at = uow.now
    run.error_message = error
    _notice(uow, run)
    uow.emit(
        RunFinished(
            run_id=run.id,
            job_definition_id=run.job_definition_id,
            status=run.status,
            error_message=run.error_message,
        )
    )


def _current(
    uow: UnitOfWork,
    run_id: uuid.UUID,
    tid: uuid.UUID,
    attempt: int,
    what: str,
    earlier_ok: bool = False,
) -> tuple[JobRun, Task] | None:
    """The run and task an outcome is about, if it concerns their current attempt (or,
    with `earlier_ok`, an earlier one)."""
    run = _run_for_update(uow, run_id)
    task = uow.get(Task, tid)
    if run is None or task is None or task.job_run_id != run.id:
        log.warning("%s for unknown run %s or task %s, dropped", what, run_id, tid)
        return None
    if run.status in FINAL_RUN_STATUSES or task.status in FINAL_TASK_STATUSES:
        return None
    if attempt > task.attempt_count or (attempt < task.attempt_count and not earlier_ok):
        log.info("%s of superseded attempt %d of task %s, ignored", what, attempt, tid)
        return None
    return run, task


def on_job_due(event: JobDue, uow: UnitOfWork, message_id: str | None) -> None:
    run_id = resolve_run_id(event, message_id)
    job = uow.get(JobDefinition, event.job_definition_id)
    if job is None:
        raise PoisonMessage(f"JobDue names no known job: {event.job_definition_id}")
    if uow.get(JobRun, run_id) is not None:
        return
    run = uow.new(
        JobRun,
        id=run_id,
        job_definition_id=job.id,
        status=RunStatus.PENDING,
        trigger=event.trigger,
        scheduled_for=event.scheduled_for,
        created_at=uow.now,
    )
    task = uow.new(
        Task,
        id=task_id(run_id, TaskType.EXTRACT),
        job_run_id=run_id,
        task_type=TaskType.EXTRACT,
        status=TaskStatus.PENDING,
        attempt_count=0,
        max_attempts=job.max_attempts,
        created_at=uow.now,
    )
    _dispatch(uow, job, run, task, None)
    _notice(uow, run)
    _notice(uow, run, task)


def on_task_started(event: TaskStarted, uow: UnitOfWork) -> None:
    found = _current(uow, event.run_id, event.task_id, event.attempt, "TaskStarted")
    if found is None:
        return
    run, task = found
    _record_start(uow, run, task, event.worker_id, event.occurred_at)


def _record_start(
    uow: UnitOfWork, run: JobRun, task: Task, worker_id: str | None, at: datetime | None
) -> None:
    """The attempt runs: the task (and the run, if pending) go RUNNING."""
    # Already RUNNING: the message was redelivered to another worker, which now owns it.
    task.worker_id = worker_id or task.worker_id
    if task.status is TaskStatus.RUNNING:
        return
    task.status = TaskStatus.RUNNING
    task.started_at = task.started_at or at or uow.now
    if run.status is RunStatus.PENDING:
        run.status = RunStatus.RUNNING
        run.started_at = task.started_at
        _notice(uow, run)
    _notice(uow, run, task)


def on_task_succeeded(event: TaskSucceeded, uow: UnitOfWork) -> None:
    # A success counts even from an attempt already given up on (it ran twice, and the
    # other execution reported a failure first): its output is complete, so the task is
    # done and the retry waiting in a delay queue will find it final.
    found = _current(
        uow, event.run_id, event.task_id, event.attempt, "TaskSucceeded", earlier_ok=True
    )
    if found is None:
        return
    run, task = found
    job = uow.get(JobDefinition, run.job_definition_id)
    if job is None:
        log.warning("run %s lost its job definition, dropped", run.id)
        return
    if event.started_at is not None and task.attempt_count == event.attempt:
        _record_start(uow, run, task, event.worker_id, event.started_at)
    task.status = TaskStatus.COMPLETED
    task.started_at = task.started_at or uow.now
    task.completed_at = uow.now
    task.rows_processed = event.rows
    task.output = {
        "staged": event.staged.model_dump(mode="json") if event.staged else None,
        "state_update": event.state_update,
    }
    if run.status is RunStatus.PENDING:
        run.status = RunStatus.RUNNING
        run.started_at = uow.now
    _notice(uow, run, task)
    if task.task_type is TaskType.EXTRACT:
        load = uow.new(
            Task,
            id=task_id(run.id, TaskType.LOAD),
            job_run_id=run.id,
            task_type=TaskType.LOAD,
            status=TaskStatus.PENDING,
            attempt_count=0,
            max_attempts=job.max_attempts,
            created_at=uow.now,
        )
        ran = event.load
        if ran is None or ran.task_id != load.id:
            _dispatch(uow, job, run, load, event.staged)
            _notice(uow, run, load)
            return
        # The worker ran the load right after the extract (it rode in the dispatch): its
        # first attempt is recorded as dispatched, and its outcome as if it came alone.
        load.attempt_count = 1
        load.next_attempt_at = uow.now
        _notice(uow, run, load)
        outcome = ran.outcome(run.id)
        if isinstance(outcome, TaskSucceeded):
            on_task_succeeded(outcome, uow)
        else:
            on_task_failed(outcome, uow)
        return
    _save_state_update(uow, run)
    _finish_run(uow, run, RunStatus.COMPLETED, None)


def _save_state_update(uow: UnitOfWork, run: JobRun) -> None:
    """Keep what the extract asked to remember, now that its data is loaded."""
    extract = uow.get(Task, task_id(run.id, TaskType.EXTRACT))
    update = (extract.output or {}).get("state_update") if extract else None
    if not update:
        return
    rows = uow.job_state(run.job_definition_id)
    for key, value in update.items():
        row = rows.get(key)
        if row is None:
            rows[key] = uow.new(
                JobState, job_definition_id=run.job_definition_id, key=key, value=value
            )
        else:
            row.value = value


def on_task_failed(event: TaskFailed, uow: UnitOfWork) -> None:
    found = _current(uow, event.run_id, event.task_id, event.attempt, "TaskFailed")
    if found is None:
        return
    run, task = found
    if event.started_at is not None:
        _record_start(uow, run, task, event.worker_id, event.started_at)
    fail_attempt(uow, run, task, event.error, event.retryable)


def fail_attempt(uow: UnitOfWork, run: JobRun, task: Task, error: str, retryable: bool) -> None:
    """The current attempt failed: retry after a back-off, or fail the task and the run."""
    job = uow.get(JobDefinition, run.job_definition_id)
    task.error_message = error
    if job is not None and retryable and task.attempt_count < task.max_attempts:
        task.status = TaskStatus.RETRYING
        staged = None
        if task.task_type is TaskType.LOAD:
            extract = uow.get(Task, task_id(run.id, TaskType.EXTRACT))
            raw = (extract.output or {}).get("staged") if extract else None
            staged = StagedData.model_validate(raw) if raw else None
        rung = retry_policy(job).rung(task.attempt_count)
        _dispatch(uow, job, run, task, staged, delay_rung=rung)
        _notice(uow, run, task)
        return
    task.status = TaskStatus.FAILED
    task.started_at = task.started_at or uow.now
    task.completed_at = uow.now
    task.next_attempt_at = None
    _notice(uow, run, task)
    attempts = f"{task.attempt_count} attempt{'s' if task.attempt_count != 1 else ''}"
    _finish_run(
        uow, run, RunStatus.FAILED, f"{task.task_type.value} failed after {attempts}: {error}"
    )


def on_cancel_requested(event: RunCancelRequested, uow: UnitOfWork) -> None:
    run = _run_for_update(uow, event.run_id)
    if run is None:
        log.warning("cancel of unknown run %s, dropped", event.run_id)
        return
    if run.status in FINAL_RUN_STATUSES:
        return
    tasks = uow.select(Task, Task.job_run_id == run.id)
    for task in tasks:
        if task.status not in FINAL_TASK_STATUSES:
            task.status = TaskStatus.CANCELLED
            task.completed_at = uow.now
            task.next_attempt_at = None
            _notice(uow, run, task)
    uow.emit(RunCancelled(run_id=run.id))
    _finish_run(uow, run, RunStatus.CANCELLED, event.reason)
