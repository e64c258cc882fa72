"""A committed batch is acked with one `multiple` ack of its last delivery still unsettled."""

from __future__ import annotations

from typing import Any

from scheduler.coordinator.service import _ack_together


class Delivered:
    def __init__(self, tag: int, log: list[tuple[int, bool]], processed: bool = False) -> None:
        self.delivery_tag = tag
        self.processed = processed
        self.log = log

    async def ack(self, multiple: bool = False) -> None:
        assert not self.processed, "acked twice: the broker would close the channel"
        self.log.append((self.delivery_tag, multiple))
        self.processed = True


async def test_one_ack_covers_the_batch_up_to_its_last_delivery() -> None:
    log: list[tuple[int, bool]] = []
    batch: list[Any] = [Delivered(tag, log) for tag in (7, 5, 6)]

    await _ack_together(batch)

    assert log == [(7, True)]


async def test_a_message_settled_alone_is_not_the_one_acked() -> None:
    # The last delivery was set aside (acked alone): acking its tag again would be an
    # unknown delivery tag to the broker.
    log: list[tuple[int, bool]] = []
    batch: list[Any] = [Delivered(5, log), Delivered(6, log), Delivered(7, log, processed=True)]

    await _ack_together(batch)

    assert log == [(6, True)]


async def test_a_batch_settled_already_sends_nothing() -> None:
    log: list[tuple[int, bool]] = []
    batch: list[Any] = [Delivered(5, log, processed=True)]

    await _ack_together(batch)
    await _ack_together([])

    assert log == []
