"""Publishing attempts' outcomes, several to a message when they finish together.

A group commit: while one publish awaits the broker's confirm, outcomes that finish
queue up, and go out together in one `TaskOutcomes` once it is confirmed. An idle worker
sends each outcome at once, on its own; a busy worker of small tasks sends a message per
several tasks, which is a third of a run's messages through the broker and the
coordinator. The caller acks its task message only once `send` returns: the outcome is
then confirmed, whichever message carried it.
"""

from __future__ import annotations

import asyncio

from common.bus import Bus
from common.events import MAX_OUTCOMES, TaskFailed, TaskOutcomes, TaskSucceeded

Outcome = TaskSucceeded | TaskFailed

MAX_INLINE_BYTES = 1_048_576
"""Inline results one message may carry in all (each is at most `ORC_STAGING_INLINE_BYTES`)."""


class OutcomeSender:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._waiting: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def send(self, outcome: Outcome) -> None:
        """Publish `outcome` (alone or with others); returns once the broker confirmed it."""
        confirmed = asyncio.get_running_loop().create_future()
        self._waiting.append((outcome, confirmed))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send_waiting())
        await confirmed

    async def _send_waiting(self) -> None:
        batch: list[tuple[Outcome, asyncio.Future[None]]] = []
        try:
            while self._waiting:
                batch = _next_batch(self._waiting)
                del self._waiting[: len(batch)]
                outcomes = [outcome for outcome, _ in batch]
                try:
                    await self.bus.publish(
                        outcomes[0] if len(outcomes) == 1 else TaskOutcomes.of(outcomes)
                    )
                except Exception as exc:
                    for _, confirmed in batch:
                        if not confirmed.done():
                            confirmed.set_exception(exc)
                else:
                    for _, confirmed in batch:
                        if not confirmed.done():
                            confirmed.set_result(None)
        finally:
            self._sending = None
            # Cancelled (the worker is stopping): whoever still waits is told so.
            for _, confirmed in (*batch, *self._waiting):
                confirmed.cancel()
            self._waiting.clear()


def _next_batch(
    waiting: list[tuple[Outcome, asyncio.Future[None]]],
) -> list[tuple[Outcome, asyncio.Future[None]]]:
    """The outcomes that go in the next message: up to `MAX_OUTCOMES`, and inline results
    of at most `MAX_INLINE_BYTES` in all (always at least one outcome)."""
    batch: list[tuple[Outcome, asyncio.Future[None]]] = []
    inline = 0
    for item in waiting[:MAX_OUTCOMES]:
        outcome = item[0]
        staged = outcome.staged if isinstance(outcome, TaskSucceeded) else None
        size = len(staged.inline) if staged is not None and staged.inline else 0
        if batch and inline + size > MAX_INLINE_BYTES:
            break
        inline += size
        batch.append(item)
    return batch
