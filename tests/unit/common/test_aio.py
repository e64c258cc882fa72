"""Cancellation-safe waits (common/aio.py)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from common.aio import finish_first, stop_tasks, wait_or_timeout


async def test_stop_tasks_repeats_a_cancellation_that_was_lost() -> None:
    swallowed = asyncio.Event()

    async def swallows_one_cancel() -> None:
        # What asyncio.wait_for does on 3.11 when the cancel meets a completion.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(60)
        swallowed.set()
        await asyncio.sleep(60)

    task = asyncio.create_task(swallows_one_cancel(), name="stubborn")
    await asyncio.sleep(0)
    assert await stop_tasks([task], seconds=5) == []
    assert swallowed.is_set()
    assert task.cancelled()


async def test_stop_tasks_names_a_task_that_will_not_stop() -> None:
    stubborn = True

    async def never_stops() -> None:
        while stubborn:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(60)

    task = asyncio.create_task(never_stops(), name="immortal")
    await asyncio.sleep(0)
    assert await stop_tasks([task], seconds=0.3) == ["immortal"]
    stubborn = False
    task.cancel()
    await task


async def test_finish_first_lets_the_call_end_before_the_cancellation() -> None:
    finished: list[str] = []
    entered = asyncio.Event()

    async def call() -> str:
        entered.set()
        await asyncio.sleep(0.05)
        finished.append("call")
        return "done"

    caller = asyncio.create_task(finish_first(call()))
    await entered.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert finished == ["call"]


async def test_wait_or_timeout() -> None:
    assert await wait_or_timeout(asyncio.sleep(0, "x"), 1) == "x"
    assert await wait_or_timeout(asyncio.Event().wait(), 0.01) is None
