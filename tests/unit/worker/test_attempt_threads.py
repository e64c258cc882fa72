"""`AttemptThreads`: a worker's attempts run in threads of their own, as many at once as
the worker's concurrency, with the caller's context, and their results or errors come
back to the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from worker.threads import AttemptThreads

FIELD: contextvars.ContextVar[str] = contextvars.ContextVar("field", default="unset")


async def test_a_result_comes_back_from_another_thread() -> None:
    threads = AttemptThreads(2)
    try:
        ran_in = await threads.run(lambda a, b: (a + b, threading.get_ident()), 2, 3)
    finally:
        threads.close()
    assert ran_in[0] == 5
    assert ran_in[1] != threading.get_ident()


async def test_an_error_reaches_the_awaiting_coroutine() -> None:
    def fail() -> None:
        raise ValueError("broken plugin")

    threads = AttemptThreads(1)
    try:
        with pytest.raises(ValueError, match="broken plugin"):
            await threads.run(fail)
    finally:
        threads.close()


async def test_the_callers_context_goes_along() -> None:
    threads = AttemptThreads(1)
    FIELD.set("run 7")
    try:
        assert await threads.run(FIELD.get) == "run 7"
    finally:
        threads.close()


async def test_as_many_attempts_block_at_once_as_there_are_threads_and_no_more_threads() -> None:
    size = 8  # more than the default executor's threads on a 2-core machine (cores + 4)
    together = threading.Barrier(size, timeout=10)
    threads = AttemptThreads(size)
    try:
        # Each waits for all the others: they pass only if all run at the same time.
        results = await asyncio.gather(*(threads.run(together.wait) for _ in range(size)))
        # Later attempts reuse the threads.
        await asyncio.gather(*(threads.run(lambda: None) for _ in range(3 * size)))
    finally:
        threads.close()
    assert sorted(results) == list(range(size))
    assert len(threads._threads) == size


async def test_a_result_nobody_waits_for_is_dropped_quietly() -> None:
    release = threading.Event()
    threads = AttemptThreads(1)
    try:
        abandoned = threads.run(release.wait)
        abandoned.cancel()
        release.set()
        # The thread finishes the abandoned attempt, then takes the next one.
        assert await threads.run(lambda: "next") == "next"
    finally:
        threads.close()


async def test_closed_threads_end_and_take_no_more_work() -> None:
    threads = AttemptThreads(2)
    await asyncio.gather(threads.run(lambda: None), threads.run(lambda: None))
    # Daemons: a stopping worker does not wait at exit for an attempt it abandoned.
    assert all(thread.daemon for thread in threads._threads)
    threads.close()
    for thread in threads._threads:
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()
    with pytest.raises(RuntimeError):
        threads.run(lambda: None)
