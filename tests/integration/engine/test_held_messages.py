"""A worker holds more task messages than it runs at once, and none of them waits behind
long attempts: once every slot runs long, the waiting ones go back to the queue's tail for
another worker, and the worker takes no more until a slot frees."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pyarrow as pa
import pytest

from common.events import JobDue, TaskStarted
from common.settings import Settings
from common.states import RunStatus
from plugins.base import Extractor, PluginConfig
from plugins.registry import clear_registrations, register_extractor
from tests.harness import engine_running, generate_job, insert_job, publish, read_run, tap

SLOTS = 4
"""The harness's worker concurrency (`tests.harness.engine_running`)."""

release = threading.Event()


class Blocking(Extractor[PluginConfig]):
    """Runs until the test releases it, reporting progress (where a stopping worker
    interrupts it)."""

    config_model = PluginConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        while not release.wait(0.02):
            self.context.report_progress(0)
        yield pa.record_batch({"x": [1]})


@pytest.fixture(autouse=True)
def blocking_plugin() -> Iterator[None]:
    register_extractor("blocking", Blocking)
    release.clear()
    yield
    release.set()
    clear_registrations()


async def test_held_messages_do_not_wait_behind_long_attempts(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(
        update={
            "start_report_seconds": 0.05,
            "worker_long_task_seconds": 0.3,
            "worker_grace_seconds": 5.0,
        }
    )
    blocking = await insert_job(
        settings,
        name="blocking",
        extractor_type="blocking",
        extractor_config={},
        loader_type="null",
        loader_config={},
        max_attempts=1,
    )
    short = await generate_job(settings, "short")
    long_runs = [uuid.uuid4() for _ in range(SLOTS)]
    short_runs = [uuid.uuid4() for _ in range(3)]
    keys = ("task.started", "run.finished")
    async with tap(settings, *keys) as t, engine_running(settings):
        # One message, in order: the worker is handed the blocking extracts first (they
        # take every slot), then the short ones, which it holds (prefetch 4 per slot).
        await publish(
            settings,
            *(JobDue(job_definition_id=blocking.id, run_id=r) for r in long_runs),
            *(JobDue(job_definition_id=short.id, run_id=r) for r in short_runs),
        )
        starts = [await t.next(TaskStarted, run_id=r) for r in long_runs]
        first_worker = {s.worker_id for s in starts}
        assert len(first_worker) == 1

        # A second worker gets the short runs: the first passed them on.
        async with engine_running(settings, ("worker",)):
            finished = await t.finished_runs(len(short_runs))
        assert {f.run_id for f in finished} == set(short_runs)
        assert {f.status for f in finished} == {RunStatus.COMPLETED}
        assert not release.is_set()  # every long attempt still runs
        for run_id in short_runs:
            run, tasks = await read_run(settings, run_id)
            assert run is not None and run.status is RunStatus.COMPLETED
            assert tasks and all(task.worker_id not in first_worker for task in tasks)
            assert all(task.attempt_count == 1 for task in tasks)  # passed on, not failed

        release.set()
        finished = await t.finished_runs(len(long_runs))
        assert {f.run_id for f in finished} == set(long_runs)
        assert {f.status for f in finished} == {RunStatus.COMPLETED}

        # Its slots free again, the first worker takes deliveries again.
        later = [uuid.uuid4() for _ in range(2)]
        await publish(settings, *(JobDue(job_definition_id=short.id, run_id=r) for r in later))
        finished = await t.finished_runs(len(later))
        assert {f.run_id for f in finished} == set(later)
        for run_id in later:
            _, tasks = await read_run(settings, run_id)
            assert tasks and all(task.worker_id in first_worker for task in tasks)
