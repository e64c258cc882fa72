"""Retries through the delay ladder, timeouts, cancellation, poison messages and lost
workers, each against the real broker and a real state store."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import aio_pika
import pytest

from common.bus import connect_bus
from common.db.models import JobDefinition
from common.events import (
    JobDue,
    RunCancelRequested,
    StateChanged,
    TaskDispatched,
    TaskStarted,
    WorkerHeartbeat,
    utcnow,
)
from common.settings import Settings
from common.states import RunStatus, TaskStatus, TaskType
from common.topology import task_queue
from tests.harness import Tap, engine_running, insert_job, publish, read_run, take, tap

LOADER = {"loader_type": "duckdb", "loader_config": {"database": "out.duckdb", "table": "t"}}


async def make_job(
    settings: Settings, extractor: str, config: dict[str, Any], **kw: Any
) -> JobDefinition:
    fields: dict[str, Any] = {
        "name": f"job-{uuid.uuid4().hex[:8]}",
        "extractor_type": extractor,
        "extractor_config": config,
        "max_attempts": 3,
        "retry_backoff_seconds": 1.0,
        "retry_backoff_factor": 1.0,
        "retry_jitter": 0.0,
        **LOADER,
        **kw,
    }
    return await insert_job(settings, **fields)


async def trigger(settings: Settings, job: JobDefinition) -> uuid.UUID:
    run_id = uuid.uuid4()
    await publish(settings, JobDue(job_definition_id=job.id, run_id=run_id))
    return run_id


async def starts(t: Tap, run_id: uuid.UUID, count: int) -> list[TaskStarted]:
    return [await t.next(TaskStarted, run_id=run_id) for _ in range(count)]


async def test_retryable_failure_retries_with_backoff_then_succeeds(
    fast_settings: Settings,
) -> None:
    settings = fast_settings
    job = await make_job(settings, "flaky", {"fail_times": 2})
    async with tap(settings, "task.started", "run.finished") as t, engine_running(settings):
        run_id = await trigger(settings, job)
        started = await starts(t, run_id, 3)
        finished = await t.run_finished(run_id)
    assert finished.status is RunStatus.COMPLETED, finished.error_message
    assert [s.attempt for s in started] == [1, 2, 3]
    gaps = [(b.occurred_at - a.occurred_at).total_seconds() for a, b in itertools.pairwise(started)]
    # Each retry waits in the 1-second rung of the delay ladder.
    assert all(0.9 <= gap < 4 for gap in gaps), gaps
    _, tasks = await read_run(settings, run_id)
    assert tasks[0].attempt_count == 3
    assert tasks[0].status is TaskStatus.COMPLETED


async def test_exhausted_retries_fail_task_and_run_with_last_error(fast_settings: Settings) -> None:
    settings = fast_settings
    job = await make_job(settings, "flaky", {"fail_times": 99}, max_attempts=2)
    async with tap(settings, "state.changes", "run.finished") as t, engine_running(settings):
        run_id = await trigger(settings, job)
        retrying = await t.next(StateChanged, run_id=run_id, task_status=TaskStatus.RETRYING)
        finished = await t.run_finished(run_id)
    assert retrying.error_message is not None
    assert "transient failure #1" in retrying.error_message
    assert finished.status is RunStatus.FAILED
    assert finished.error_message is not None
    assert "after 2 attempts" in finished.error_message
    assert "transient failure #2" in finished.error_message
    run, tasks = await read_run(settings, run_id)
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert [(t.status, t.attempt_count) for t in tasks] == [(TaskStatus.FAILED, 2)]


async def test_non_retryable_failure_fails_at_once(fast_settings: Settings) -> None:
    settings = fast_settings
    job = await make_job(settings, "flaky", {"fail_times": 5, "permanent": True}, max_attempts=5)
    async with tap(settings) as t, engine_running(settings):
        run_id = await trigger(settings, job)
        finished = await t.run_finished(run_id)
    assert finished.status is RunStatus.FAILED
    _, tasks = await read_run(settings, run_id)
    assert tasks[0].attempt_count == 1


async def test_attempt_over_its_timeout_is_stopped_and_counted(fast_settings: Settings) -> None:
    settings = fast_settings
    job = await make_job(settings, "sleepy", {"seconds": 30}, max_attempts=1, timeout_seconds=0.5)
    async with tap(settings) as t, engine_running(settings):
        run_id = await trigger(settings, job)
        finished = await t.run_finished(run_id, timeout=10)
    assert finished.status is RunStatus.FAILED
    assert finished.error_message is not None
    assert "timed out after 0.5s" in finished.error_message


async def test_cancel_interrupts_running_attempt_and_is_final(fast_settings: Settings) -> None:
    settings = fast_settings
    job = await make_job(settings, "sleepy", {"seconds": 30})
    async with (
        tap(settings, "task.started", "task.failed", "run.finished") as t,
        engine_running(settings),
    ):
        run_id = await trigger(settings, job)
        await t.next(TaskStarted, run_id=run_id)
        bus = await connect_bus(settings.broker_url, settings.namespace)
        await bus.publish(RunCancelRequested(run_id=run_id))
        finished = await t.run_finished(run_id)
        # The worker stops the plugin at its next progress report and says so.
        from common.events import TaskFailed

        interrupted = await t.next(TaskFailed, run_id=run_id, timeout=5)
        # A late JobDue or a retry for the same run changes nothing.
        await bus.publish(JobDue(job_definition_id=job.id, run_id=run_id))
        await bus.close()
    assert finished.status is RunStatus.CANCELLED
    assert "run cancelled" in interrupted.error
    run, tasks = await read_run(settings, run_id)
    assert run is not None
    assert run.status is RunStatus.CANCELLED
    assert [t.status for t in tasks] == [TaskStatus.CANCELLED]


async def test_poison_task_message_fails_its_task(fast_settings: Settings) -> None:
    """A worker that dies on a message every time: the queue's delivery limit sets it aside,
    and the coordinator fails the task it carried."""
    settings = fast_settings
    job = await make_job(settings, "sleepy", {"seconds": 0})
    async with tap(settings) as t, engine_running(settings, ("coordinator",)):
        run_id = await trigger(settings, job)
        connection = await aio_pika.connect(settings.broker_url)
        channel = await connection.channel()
        queue = await channel.get_queue(
            task_queue(settings.namespace, TaskType.EXTRACT), ensure=False
        )

        async def die(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.nack(requeue=True)

        await queue.consume(die)
        finished = await t.run_finished(run_id)
        await connection.close()
    assert finished.status is RunStatus.FAILED
    assert finished.error_message is not None
    assert "delivered too many times" in finished.error_message


async def test_malformed_task_message_is_dead_lettered_and_fails_its_task(
    fast_settings: Settings,
) -> None:
    settings = fast_settings
    job = await make_job(settings, "sleepy", {"seconds": 0})
    # Only the coordinator at first: the real dispatch waits in the queue.
    async with (
        tap(settings, "task.started", "run.finished") as t,
        engine_running(settings, ("coordinator",)),
    ):
        run_id = await trigger(settings, job)
        connection = await aio_pika.connect(settings.broker_url)
        channel = await connection.channel()
        queue = await channel.get_queue(task_queue(settings.namespace, "extract"), ensure=False)
        real = await take(queue)
        dispatched = TaskDispatched.model_validate_json(real.body)
        await real.ack()
        broken = {"task_id": str(dispatched.task_id), "run_id": str(run_id), "attempt": 1}
        exchange = await channel.get_exchange(f"{settings.namespace}.events", ensure=False)
        await exchange.publish(aio_pika.Message(json.dumps(broken).encode()), "task.extract")
        async with engine_running(settings, ("worker",)):
            finished = await t.run_finished(run_id)
        await connection.close()
    assert finished.status is RunStatus.FAILED
    assert finished.error_message is not None
    assert "not a valid TaskDispatched" in finished.error_message


async def test_lost_worker_task_gets_a_new_attempt(fast_settings: Settings) -> None:
    """A worker that takes a task, says it started, then goes silent without closing its
    connection (hung): it is marked LOST and the task runs again elsewhere."""
    settings = fast_settings
    job = await make_job(settings, "sleepy", {"seconds": 0.1})
    async with (
        tap(settings, "task.started", "run.finished") as t,
        engine_running(settings, ("coordinator",)),
    ):
        run_id = await trigger(settings, job)
        ghost = await aio_pika.connect(settings.broker_url)
        channel = await ghost.channel()
        queue = await channel.get_queue(task_queue(settings.namespace, "extract"), ensure=False)
        held = await take(queue)
        task = TaskDispatched.model_validate_json(held.body)
        bus = await connect_bus(settings.broker_url, settings.namespace)
        await bus.publish(
            WorkerHeartbeat(
                worker_id="ghost",
                host="nowhere",
                queues=("extract",),
                concurrency=1,
                started_at=utcnow(),
            )
        )
        await bus.publish(
            TaskStarted(task_id=task.task_id, run_id=run_id, attempt=1, worker_id="ghost")
        )
        await t.next(TaskStarted, run_id=run_id)
        async with engine_running(settings, ("worker",)):
            second = await t.next(TaskStarted, run_id=run_id, timeout=10)
            finished = await t.run_finished(run_id)
        await bus.close()
        await ghost.close()
    assert second.attempt == 2
    assert second.worker_id != "ghost"
    assert finished.status is RunStatus.COMPLETED


@pytest.mark.slow
async def test_sigterm_lets_running_task_finish(fast_settings: Settings) -> None:
    settings = fast_settings
    job = await make_job(settings, "sleepy", {"seconds": 1.5})
    async with (
        tap(settings, "task.started", "run.finished") as t,
        engine_running(settings, ("coordinator",)),
    ):
        run_id = await trigger(settings, job)
        worker = engine_running(settings, ("worker",))
        await worker.__aenter__()
        await t.next(TaskStarted, run_id=run_id)
        await worker.__aexit__(None, None, None)  # graceful: waits for the task
        async with engine_running(settings, ("worker",)):
            finished = await t.run_finished(run_id)
    assert finished.status is RunStatus.COMPLETED
    _, tasks = await read_run(settings, run_id)
    assert tasks[0].attempt_count == 1


@pytest.mark.slow
async def test_shutdown_hands_back_unfinished_task(fast_settings: Settings) -> None:
    settings = fast_settings.model_copy(update={"worker_grace_seconds": 0.2})
    job = await make_job(settings, "sleepy", {"seconds": 2})
    async with (
        tap(settings, "task.started", "run.finished") as t,
        engine_running(settings, ("coordinator",)),
    ):
        run_id = await trigger(settings, job)
        worker = engine_running(settings, ("worker",))
        await worker.__aenter__()
        first = await t.next(TaskStarted, run_id=run_id)
        await worker.__aexit__(None, None, None)
        async with engine_running(settings, ("worker",)):
            again = await t.next(TaskStarted, run_id=run_id)
            finished = await t.run_finished(run_id)
    assert finished.status is RunStatus.COMPLETED
    # Handed back un-acked: the same attempt is redelivered, not a new one.
    assert first.attempt == again.attempt == 1
    assert first.worker_id != again.worker_id
