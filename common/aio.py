"""Cancellation-safe waits, for the components' loops and their shutdown.

Two traps found the hard way (a test engine that never stopped, one CI run in four):
- on Python 3.11 `asyncio.wait_for` loses a cancellation that arrives as the awaited
  thing completes, so a loop built on it goes on after it was told to stop;
- a task cancelled inside an aiosqlite call through SQLAlchemy can wait forever (its
  connection's shielded close, or a result that never wakes it: aiosqlite 0.21 and 0.22
  both showed it), so a database call must end before a cancellation takes effect.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_or_timeout(awaitable: Awaitable[T], seconds: float) -> T | None:
    """What `awaitable` gives if it finishes within `seconds`, else None.

    `asyncio.timeout` instead of `wait_for`: a cancellation of the caller always wins.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            return await awaitable
    return None


async def finish_first(call: Coroutine[Any, Any, T]) -> T:
    """Await `call` in a task of its own; a cancellation of the caller waits for it to
    finish, then takes effect. For short database calls that must not be cut mid-way."""
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what the caller reports
        raise


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], seconds: float) -> list[str]:
    """Cancel the tasks and wait up to `seconds` for them; the names of those that did
    not stop (a lost cancellation is repeated once a second meanwhile)."""
    pending = set(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(1.0, deadline - loop.time()))
    return sorted(task.get_name() for task in pending)
