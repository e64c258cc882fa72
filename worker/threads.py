"""The threads a worker runs its attempts in: one per task it may run at once.

Plugins block (files, sockets, DuckDB), so an attempt runs off the event loop. Through
`asyncio.to_thread` each attempt went through the loop's default executor, which has
fewer threads than a worker's default concurrency on a small machine (cores + 4), and
paid for `concurrent.futures` machinery it has no use for: a future with its condition
and lock, a work item, an idle-thread semaphore, and an asyncio future chained to it.
Here an attempt is a queue entry, and its result comes back to the loop in one
`call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    contextvars.Context,
    Callable[..., Any],
    tuple[Any, ...],
]


class AttemptThreads:
    """Runs functions in up to `size` threads, started as they are first needed."""

    def __init__(self, size: int, name: str = "orc-attempt") -> None:
        if size < 1:
            raise ValueError("AttemptThreads needs at least one thread")
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def run(self, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """`func(*args)` in a thread, with the caller's context (log fields, trace); the
        future is the loop's. Cancelling it does not stop the function: it runs to its
        end, and its result is dropped."""
        if self._closed:
            raise RuntimeError("AttemptThreads is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, contextvars.copy_context(), func, args))
        with self._lock:
            # A thread per job not yet picked up, up to the size: an attempt never waits
            # behind another that blocks.
            if self._idle <= 0 and len(self._threads) < self._size:
                self._start_thread()
            else:
                self._idle -= 1
        return future

    def close(self) -> None:
        """Let every thread end once it is done with its attempt. Does not wait.

        The threads are daemons: the process does not wait for an attempt abandoned at
        shutdown (its message was handed back, or its goodbye names it, so it runs again
        elsewhere), where the default executor's threads kept a stopping worker alive
        until a hung plugin returned."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            _run(*job)
            del job  # a result held here would stay in memory until the next attempt
            with self._lock:
                self._idle += 1


def _run(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    context: contextvars.Context,
    func: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    try:
        result = context.run(func, *args)
    except BaseException as exc:  # handed to the awaiting coroutine
        _post(loop, _set_exception, future, exc)
    else:
        _post(loop, _set_result, future, result)


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(callback, *args)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
