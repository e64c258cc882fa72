"""A busy worker reports outcomes that finish together in one `TaskOutcomes` message; the
coordinator counts each outcome it carries as if it had come alone."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika

from common.bus import connect_bus
from common.events import (
    JobDue,
    LoadResult,
    TaskDispatched,
    TaskFailed,
    TaskOutcomes,
    TaskSucceeded,
    utcnow,
)
from common.settings import Settings
from common.states import RunStatus, TaskStatus, TaskType
from common.topology import coordinator_queue, task_queue
from tests.harness import engine_running, generate_job, publish, read_run, take, tap
from tests.integration.bus.test_outside_publisher import drain
from worker.outcomes import OutcomeSender


def succeeded(task: TaskDispatched) -> TaskSucceeded:
    return TaskSucceeded(task_id=task.task_id, run_id=task.run_id, attempt=1, rows=1)


async def test_outcomes_sent_together_travel_in_one_message(settings: Settings) -> None:
    outcomes = [
        TaskSucceeded(task_id=uuid.uuid4(), run_id=uuid.uuid4(), attempt=1) for _ in range(6)
    ]
    bus = await connect_bus(settings.broker_url, settings.namespace)
    try:
        sender = OutcomeSender(bus)
        # All five are waiting before the first publish starts: they go as one message.
        await asyncio.gather(*(sender.send(o) for o in outcomes[:5]))
        await sender.send(outcomes[5])
    finally:
        await bus.close()

    messages = await drain(settings, coordinator_queue(settings.namespace))

    assert [m.routing_key for m in messages] == [
        TaskOutcomes.routing_key,
        TaskSucceeded.routing_key,
    ]
    together = TaskOutcomes.model_validate_json(messages[0].body)
    assert list(together.succeeded) == outcomes[:5]
    assert TaskSucceeded.model_validate_json(messages[1].body) == outcomes[5]


async def test_the_coordinator_counts_each_outcome_a_message_carries(settings: Settings) -> None:
    job = await generate_job(settings, "reported-together", rows=1)
    run_ids = [uuid.uuid4() for _ in range(3)]
    async with tap(settings) as t, engine_running(settings, components=("coordinator",)):
        await publish(settings, *(JobDue(job_definition_id=job.id, run_id=r) for r in run_ids))
        dispatched = await taken_dispatches(settings, len(run_ids))
        by_run = {d.run_id: d for d in dispatched}
        first, second, third = (by_run[r] for r in run_ids)
        assert first.then is not None and second.then is not None
        loaded = LoadResult(task_id=first.then.task_id, started_at=utcnow(), worker_id="w")
        outcomes = TaskOutcomes(
            succeeded=(
                succeeded(first).model_copy(update={"load": loaded}),
                succeeded(second),
            ),
            failed=(
                TaskFailed(
                    task_id=third.task_id,
                    run_id=third.run_id,
                    attempt=1,
                    error="the source is gone",
                    retryable=False,
                ),
            ),
        )
        await publish(settings, outcomes)
        finished = {f.run_id: f for f in await t.finished_runs(2)}
        second_run, second_tasks = await read_run(settings, second.run_id)

    assert {r: f.status for r, f in finished.items()} == {
        first.run_id: RunStatus.COMPLETED,
        third.run_id: RunStatus.FAILED,
    }
    assert "the source is gone" in (finished[third.run_id].error_message or "")
    # The second extract succeeded without its load: the load went out on its own.
    assert second_run is not None and second_run.status is RunStatus.RUNNING
    statuses = {task.task_type: task.status for task in second_tasks}
    assert statuses == {TaskType.EXTRACT: TaskStatus.COMPLETED, TaskType.LOAD: TaskStatus.PENDING}
    load_queue = await drain(settings, task_queue(settings.namespace, TaskType.LOAD))
    assert [TaskDispatched.model_validate_json(m.body).run_id for m in load_queue] == [
        second.run_id
    ]


async def taken_dispatches(settings: Settings, count: int) -> list[TaskDispatched]:
    """The first `count` extract dispatches, taken off their queue."""
    connection = await aio_pika.connect(settings.broker_url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1)
        queue = await channel.get_queue(task_queue(settings.namespace, TaskType.EXTRACT))
        dispatched = []
        for _ in range(count):
            message = await take(queue)
            dispatched.append(TaskDispatched.model_validate_json(message.body))
            await message.ack()
        return dispatched
    finally:
        await connection.close()
