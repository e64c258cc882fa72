"""`worker.slots.Slots`: attempts run at once, held messages in line, and the long-task rule
that sends waiting messages away instead of letting them wait behind long attempts."""

from __future__ import annotations

import asyncio

import pytest

from worker.slots import Slot, Slots

LONG = 0.05


class Saturation:
    def __init__(self) -> None:
        self.calls: list[bool] = []
        self.changed = asyncio.Event()

    def __call__(self, saturated: bool) -> None:
        self.calls.append(saturated)
        self.changed.set()

    async def next(self) -> bool:
        await asyncio.wait_for(self.changed.wait(), 5)
        self.changed.clear()
        return self.calls[-1]


async def _take(slots: Slots) -> Slot:
    slot = await slots.take()
    assert slot is not None
    return slot


async def test_a_free_slot_is_taken_at_once_and_a_waiting_message_gets_the_next_freed() -> None:
    slots = Slots(2, long_after=60, on_saturated=Saturation())
    first, second = await _take(slots), await _take(slots)
    third = asyncio.ensure_future(slots.take())
    fourth = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    assert not third.done() and slots.waiting == 2
    second.release()
    handed = await asyncio.wait_for(third, 5)
    assert handed is not None and not fourth.done()  # first in line, first served
    second.release()  # a second release of the same slot frees nothing
    await asyncio.sleep(0)
    assert not fourth.done()
    first.release()
    assert await asyncio.wait_for(fourth, 5) is not None
    for slot in (handed, fourth.result()):
        assert slot is not None
        slot.release()
    # All free again: as many as the size are taken without waiting.
    assert [await slots.take() is not None for _ in range(2)] == [True, True]


async def test_when_every_slot_runs_long_the_waiting_are_sent_away_until_one_frees() -> None:
    saturation = Saturation()
    slots = Slots(2, long_after=LONG, on_saturated=saturation)
    first, second = await _take(slots), await _take(slots)
    waiting = asyncio.ensure_future(slots.take())
    assert await saturation.next() is True  # both ran `long_after`
    assert await asyncio.wait_for(waiting, 5) is None
    assert slots.saturated and await slots.take() is None  # new arrivals too
    first.release()
    assert await saturation.next() is False
    assert not slots.saturated
    again = await _take(slots)
    again.release()
    second.release()
    assert saturation.calls == [True, False]


async def test_one_short_attempt_among_long_ones_keeps_the_line_waiting() -> None:
    saturation = Saturation()
    slots = Slots(2, long_after=LONG, on_saturated=saturation)
    long_one = await _take(slots)
    await asyncio.sleep(LONG * 2)  # a timer's worth: it is long now
    assert long_one.long
    short = await _take(slots)
    waiting = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    assert not slots.saturated and not waiting.done()
    short.release()
    taken = await asyncio.wait_for(waiting, 5)
    assert taken is not None and not taken.long
    taken.release()
    long_one.release()
    assert saturation.calls == []


async def test_a_message_cancelled_while_in_line_leaves_the_line() -> None:
    slots = Slots(1, long_after=60, on_saturated=Saturation())
    only = await _take(slots)
    waiting = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert slots.waiting == 0
    only.release()
    assert await slots.take() is not None


async def test_a_slot_handed_to_a_cancelled_message_is_freed_again() -> None:
    slots = Slots(1, long_after=60, on_saturated=Saturation())
    only = await _take(slots)
    waiting = asyncio.ensure_future(slots.take())
    await asyncio.sleep(0)
    only.release()  # hands the slot to `waiting`, which is cancelled before it resumes
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.wait_for(slots.take(), 5) is not None


def test_a_worker_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        Slots(0, long_after=1, on_saturated=lambda _: None)
