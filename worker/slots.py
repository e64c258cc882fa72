"""Which held task message may run now: `size` attempts at once, the rest wait their turn.

A worker holds more task messages than it runs at once (see `Worker`): an attempt leaves
its slot as soon as its plugin returns, while its outcome still awaits the broker's
confirm and its message its ack, and a held message takes the slot at once. For small
tasks this keeps every slot busy through the confirm round trips that would otherwise
leave it idle.

What must not happen (Celery's prefetch trap): a message waiting here behind tasks that
run for minutes while another worker idles. So an attempt that has run `long_after`
seconds counts as long; once every slot holds a long one, the waiting messages are told
to go (`take` answers None: the worker passes them on to another worker) and
`on_saturated(True)` asks the worker to stop taking deliveries until a slot frees
(`on_saturated(False)`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class Slot:
    """One running attempt's place; `release()` frees it (once, however often called)."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self.long = False
        self.released = False
        self._timer = asyncio.get_running_loop().call_later(
            slots.long_after, slots._became_long, self
        )

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._timer.cancel()
            self._slots._release(self)


class Slots:
    def __init__(self, size: int, long_after: float, on_saturated: Callable[[bool], None]) -> None:
        if size < 1:
            raise ValueError("a worker needs at least one slot")
        self.size = size
        self.long_after = long_after
        self._on_saturated = on_saturated
        self._free = size
        self._long = 0
        self._waiting: deque[asyncio.Future[Slot | None]] = deque()

    @property
    def saturated(self) -> bool:
        """Every slot runs a long attempt."""
        return self._long == self.size

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def take(self) -> Slot | None:
        """A slot, once one is free; None if every slot runs long (pass the message on)."""
        if self._free > 0:
            self._free -= 1
            return Slot(self)
        if self.saturated:
            return None
        turn: asyncio.Future[Slot | None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.cancelled():  # still in line
                self._waiting.remove(turn)
            elif (slot := turn.result()) is not None:  # given a slot, then cancelled
                slot.release()
            raise

    def _became_long(self, slot: Slot) -> None:
        slot.long = True
        self._long += 1
        if self.saturated:
            while self._waiting:
                self._waiting.popleft().set_result(None)
            self._on_saturated(True)

    def _release(self, slot: Slot) -> None:
        was_saturated = self.saturated
        if slot.long:
            self._long -= 1
        if self._waiting:
            self._waiting.popleft().set_result(Slot(self))
        else:
            self._free += 1
        if was_saturated:
            self._on_saturated(False)
