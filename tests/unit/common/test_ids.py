"""Fresh ids (common/ids.py)."""

from __future__ import annotations

import multiprocessing
import uuid

from common.events import RunCancelRequested
from common.ids import new_id


def _one_id(queue: multiprocessing.Queue[str]) -> None:
    queue.put(str(new_id()))


def test_new_ids_are_version_4_and_distinct() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(i.version == 4 and i.variant == uuid.RFC_4122 for i in ids)
    assert RunCancelRequested(run_id=ids[0]).event_id.version == 4


def test_forked_children_do_not_repeat_each_others_ids() -> None:
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[str] = context.Queue()
    children = [context.Process(target=_one_id, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    first, second = queue.get(timeout=10), queue.get(timeout=10)
    assert first != second
