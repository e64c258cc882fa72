"""The worker's group commit of outcomes, over a bus whose confirms the test releases."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import pytest

from common.events import (
    MAX_OUTCOMES,
    Event,
    StagedData,
    TaskFailed,
    TaskOutcomes,
    TaskSucceeded,
)
from worker.outcomes import MAX_INLINE_BYTES, OutcomeSender


class HeldBus:
    """Records what is published; each publish waits until the test confirms it."""

    def __init__(self) -> None:
        self.published: list[Event] = []
        self.confirms: list[asyncio.Future[None]] = []
        self.published_one = asyncio.Event()

    async def publish(self, event: Event, **_: Any) -> None:
        confirm = asyncio.get_running_loop().create_future()
        self.published.append(event)
        self.confirms.append(confirm)
        self.published_one.set()
        await confirm

    async def next_publish(self) -> Event:
        async with asyncio.timeout(5):
            while not self.published_one.is_set():
                await self.published_one.wait()
        self.published_one.clear()
        return self.published[-1]


def outcome(inline_bytes: int = 0) -> TaskSucceeded:
    staged = None
    if inline_bytes:
        staged = StagedData(
            uri="file:///s", files=(), rows=1, inline=base64.b64encode(b"x" * inline_bytes).decode()
        )
    return TaskSucceeded(task_id=uuid.uuid4(), run_id=uuid.uuid4(), attempt=1, staged=staged)


@pytest.fixture
def bus() -> HeldBus:
    return HeldBus()


def sender_over(bus: HeldBus) -> OutcomeSender:
    return OutcomeSender(bus)  # type: ignore[arg-type]


async def test_an_idle_worker_sends_each_outcome_alone_and_at_once(bus: HeldBus) -> None:
    sender = sender_over(bus)
    first = outcome()

    sending = asyncio.create_task(sender.send(first))
    assert await bus.next_publish() == first
    assert not sending.done(), "send returned before the broker confirmed"
    bus.confirms[0].set_result(None)
    await sending


async def test_outcomes_that_finish_during_a_confirm_go_together_after_it(bus: HeldBus) -> None:
    sender = sender_over(bus)
    first, later = outcome(), [outcome() for _ in range(3)]
    failure: TaskSucceeded | TaskFailed = TaskFailed(
        task_id=uuid.uuid4(), run_id=uuid.uuid4(), attempt=1, error="no"
    )
    sends = [asyncio.create_task(sender.send(first))]
    await bus.next_publish()
    sends += [asyncio.create_task(sender.send(o)) for o in (*later, failure)]
    await asyncio.sleep(0)  # they queue behind the confirm still awaited

    assert len(bus.published) == 1
    bus.confirms[0].set_result(None)
    together = await bus.next_publish()
    assert sends[0].done() and not any(s.done() for s in sends[1:])
    bus.confirms[1].set_result(None)
    await asyncio.gather(*sends)

    assert isinstance(together, TaskOutcomes)
    assert together.succeeded == tuple(later) and together.failed == (failure,)


async def test_a_failed_publish_fails_every_send_it_carried(bus: HeldBus) -> None:
    sender = sender_over(bus)
    sends = [asyncio.create_task(sender.send(outcome()))]
    await bus.next_publish()
    sends += [asyncio.create_task(sender.send(outcome())) for _ in range(2)]
    bus.confirms[0].set_result(None)
    await bus.next_publish()
    bus.confirms[1].set_exception(ConnectionError("broker gone"))

    results = await asyncio.gather(*sends, return_exceptions=True)

    assert results[0] is None
    assert [type(r) for r in results[1:]] == [ConnectionError, ConnectionError]


async def test_a_message_carries_at_most_the_count_and_inline_bytes_allowed(
    bus: HeldBus,
) -> None:
    sender = sender_over(bus)
    big = MAX_INLINE_BYTES // 3 + 1  # base64 makes each a little more than this
    waiting = [outcome() for _ in range(MAX_OUTCOMES + 1)] + [outcome(big) for _ in range(4)]
    sends = [asyncio.create_task(sender.send(outcome()))]
    await bus.next_publish()
    sends += [asyncio.create_task(sender.send(o)) for o in waiting]
    await asyncio.sleep(0)

    messages: list[Event] = []
    everything = asyncio.gather(*sends)
    while not everything.done():
        bus.confirms[-1].set_result(None)
        following = asyncio.ensure_future(bus.next_publish())
        await asyncio.wait([following, everything], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[type-var]
        if following.done():
            messages.append(following.result())
        else:
            following.cancel()
    await everything

    carried = [m.each() if isinstance(m, TaskOutcomes) else [m] for m in messages]
    assert [len(c) for c in carried] == [MAX_OUTCOMES, 3, 2]
    assert [o for c in carried for o in c] == waiting


async def test_a_stopped_sender_tells_whoever_waits(bus: HeldBus) -> None:
    sender = sender_over(bus)
    sends = [asyncio.create_task(sender.send(outcome())) for _ in range(2)]
    await bus.next_publish()
    assert sender._sending is not None
    sender._sending.cancel()

    results = await asyncio.gather(*sends, return_exceptions=True)

    assert all(isinstance(r, asyncio.CancelledError) for r in results)
