"""A worker runs an extract and the load that rode in its dispatch in one hop to a thread;
each keeps its own timeout and its own failure, reported together in one outcome."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pytest

from common.bus import connect_bus
from common.errors import PermanentError
from common.events import LoadOrder, TaskDispatched, TaskFailed, TaskSucceeded
from common.settings import Settings
from common.states import TaskType
from common.topology import task_routing_key
from plugins.base import Extractor, Loader, PluginConfig
from plugins.registry import clear_registrations, register_extractor, register_loader
from tests.builders import extract_dispatch
from tests.harness import engine_running, tap
from worker.service import AttemptInterrupted, _abandon

SLOW_SECONDS = 5.0
"""How long the slow plugins would run if nothing stopped them."""

loads_begun: list[uuid.UUID] = []
extract_ended = threading.Event()


class TwoRows(Extractor[PluginConfig]):
    config_model = PluginConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch({"x": [1, 2]})


class SlowExtract(Extractor[PluginConfig]):
    config_model = PluginConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        try:
            deadline = time.monotonic() + SLOW_SECONDS
            while time.monotonic() < deadline:
                time.sleep(0.02)
                self.context.report_progress(0)  # where an interrupted attempt stops
            yield pa.record_batch({"x": [1]})
        finally:
            extract_ended.set()


class Failing(Loader[PluginConfig]):
    config_model = PluginConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        loads_begun.append(self.context.task_id)
        raise ValueError("the destination said no")


class Refusing(Loader[PluginConfig]):
    config_model = PluginConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        loads_begun.append(self.context.task_id)
        raise PermanentError("the destination will never take this")


class SlowLoad(Loader[PluginConfig]):
    config_model = PluginConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        loads_begun.append(self.context.task_id)
        deadline = time.monotonic() + SLOW_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.02)
            self.context.report_progress(0)
        return sum(batch.num_rows for batch in batches)


class Counting(Loader[PluginConfig]):
    config_model = PluginConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        loads_begun.append(self.context.task_id)
        return sum(batch.num_rows for batch in batches)


@pytest.fixture(autouse=True)
def _plugins() -> Iterator[None]:
    register_extractor("two-rows", TwoRows)
    register_extractor("slow-extract", SlowExtract)
    register_loader("failing", Failing)
    register_loader("refusing", Refusing)
    register_loader("slow-load", SlowLoad)
    register_loader("counting", Counting)
    loads_begun.clear()
    extract_ended.clear()
    yield
    clear_registrations()


def dispatch(
    extractor: str,
    loader: str,
    timeout: float | None = None,
    load_timeout: float | None = None,
) -> TaskDispatched:
    return extract_dispatch(
        extractor,
        timeout_seconds=timeout,
        then=LoadOrder(
            task_id=uuid.uuid4(), plugin=loader, config={}, timeout_seconds=load_timeout
        ),
    )


async def outcome_of(
    settings: Settings, task: TaskDispatched, within: float = 20.0
) -> TaskSucceeded | TaskFailed:
    """Run `task` on a worker alone; its outcome, which must arrive `within` seconds."""
    keys = (TaskSucceeded.routing_key, TaskFailed.routing_key)
    async with tap(settings, *keys) as t, engine_running(settings, components=("worker",)):
        bus = await connect_bus(settings.broker_url, settings.namespace)
        try:
            await bus.publish(task, routing_key=task_routing_key(TaskType.EXTRACT))
        finally:
            await bus.close()
        async with asyncio.timeout(within):
            while True:
                event = await t.received.get()
                if isinstance(event, TaskSucceeded | TaskFailed) and event.task_id == task.task_id:
                    return event


async def test_both_succeed_in_one_outcome(sqlite_settings: Settings) -> None:
    task = dispatch("two-rows", "counting")
    outcome = await outcome_of(sqlite_settings, task)
    assert isinstance(outcome, TaskSucceeded) and outcome.rows == 2
    assert outcome.load is not None and task.then is not None
    assert (outcome.load.task_id, outcome.load.rows, outcome.load.error) == (
        task.then.task_id,
        2,
        None,
    )
    assert loads_begun == [task.then.task_id]


@pytest.mark.parametrize(
    ("loader", "error", "retryable"),
    [
        ("failing", "ValueError: the destination said no", True),
        ("refusing", "PermanentError: the destination will never take this", False),
    ],
)
async def test_a_failed_load_is_reported_beside_its_successful_extract(
    sqlite_settings: Settings, loader: str, error: str, retryable: bool
) -> None:
    outcome = await outcome_of(sqlite_settings, dispatch("two-rows", loader))
    assert isinstance(outcome, TaskSucceeded) and outcome.rows == 2
    assert outcome.load is not None
    assert (outcome.load.error, outcome.load.retryable) == (error, retryable)


async def test_a_load_over_its_own_timeout_is_stopped_and_its_extract_still_counts(
    sqlite_settings: Settings,
) -> None:
    # The extract has no timeout: the worker must still notice the load's start.
    task = dispatch("two-rows", "slow-load", timeout=None, load_timeout=0.5)
    outcome = await outcome_of(sqlite_settings, task, within=SLOW_SECONDS - 1)
    assert isinstance(outcome, TaskSucceeded) and outcome.rows == 2
    assert outcome.load is not None
    assert (outcome.load.error, outcome.load.retryable) == (
        "TimeoutError: timed out after 0.5s",
        True,
    )


async def test_an_extract_over_its_timeout_fails_and_its_load_never_starts(
    sqlite_settings: Settings,
) -> None:
    task = dispatch("slow-extract", "counting", timeout=0.5, load_timeout=30)
    outcome = await outcome_of(sqlite_settings, task, within=SLOW_SECONDS - 1)
    assert isinstance(outcome, TaskFailed)
    assert (outcome.error, outcome.retryable) == ("TimeoutError: timed out after 0.5s", True)
    # The interrupted extract stops at its next progress report; no load follows it.
    assert await asyncio.to_thread(extract_ended.wait, SLOW_SECONDS)
    assert loads_begun == []


async def test_an_abandoned_attempt_ends_without_an_error_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An overdue attempt's thread is told to stop and left to end on its own; the error it
    then ends with is expected, not an unretrieved exception for the log."""
    work: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    _abandon(work)
    work.set_exception(AttemptInterrupted("timed out after 1s"))
    await asyncio.sleep(0)  # one turn of the loop: the done callbacks run
    del work
    gc.collect()
    assert "never retrieved" not in caplog.text
