"""The cron scheduler against the real broker and both state stores.

Schedules here tick every second or two, so these tests wait on the clock (`slow`); they
still await events rather than sleep, and bound every wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from common.bus import connect_bus
from common.cron import latest_tick
from common.db.engine import make_engine, make_sessionmaker
from common.db.models import JobDefinition, JobRun
from common.events import Event, JobDue, JobsDue, RunFinished, TaskStarted, utcnow
from common.ids import scheduled_run_id, task_id
from common.settings import Settings
from common.states import RunStatus, TaskStatus, TaskType, Trigger
from scheduler.cron_scheduler import Scheduler
from tests.harness import Tap, all_runs, engine_running, insert_job, read_run, tap

pytestmark = pytest.mark.slow

EVERY_TWO_SECONDS = "*/2 * * * * *"
EVERY_SECOND = "* * * * * *"
CSV_ROWS = 20
# How late a run may be recorded after its tick: the scheduler wakes on the tick and the
# coordinator records the run as soon as it hears of it.
MAX_LATENESS = timedelta(seconds=1.5)
# The scheduler sends a tick's runs as `JobsDue`; anyone else sends `JobDue`.
DUE_KEYS = (JobDue.routing_key, JobsDue.routing_key)


def write_csv(path: Path, rows: int = CSV_ROWS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name"])
        writer.writerows([i, f"name-{i}"] for i in range(rows))


async def csv_job(
    settings: Settings, data_root: Path, schedule: str | None, **fields: object
) -> JobDefinition:
    write_csv(data_root / "in" / "people.csv")
    return await insert_job(
        settings,
        name=f"people-{uuid.uuid4().hex[:8]}",
        schedule=schedule,
        extractor_type="csv",
        extractor_config={"path": "in/people.csv"},
        loader_type="duckdb",
        loader_config={"database": "out/wh.duckdb", "table": "people"},
        max_attempts=1,
        **fields,
    )


async def collect_until(
    t: Tap, done: Callable[[Event], bool], timeout: float = 30.0
) -> list[Event]:
    """Every event the tap receives, up to and including the first for which `done` holds."""
    seen: list[Event] = []
    async with asyncio.timeout(timeout):
        while True:
            event = await t.received.get()
            seen.append(event)
            if done(event):
                return seen


def finished_run(run_id: uuid.UUID) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, RunFinished) and e.run_id == run_id


def assert_consecutive_ticks(ticks: list[datetime], step: timedelta) -> None:
    assert ticks == sorted(set(ticks)), f"duplicate ticks: {ticks}"
    for tick in ticks:
        assert tick.microsecond == 0 and tick.second % step.seconds == 0, tick
    gaps = {b - a for a, b in itertools.pairwise(ticks)}
    assert gaps <= {step}, f"ticks are not {step} apart: {ticks}"


async def test_six_field_schedule_fires_runs_on_time(settings: Settings, data_root: Path) -> None:
    job = await csv_job(settings, data_root, EVERY_TWO_SECONDS)

    async with (
        tap(settings) as t,
        engine_running(settings, ("scheduler", "coordinator", "worker")),
    ):
        finished = await t.finished_runs(2, timeout=30)

    assert [f.status for f in finished] == [RunStatus.COMPLETED] * 2, finished
    runs = sorted(await all_runs(settings), key=lambda r: r.scheduled_for or job.created_at)
    assert {f.run_id for f in finished} <= {r.id for r in runs}
    assert len(runs) >= 2
    ticks = []
    for run in runs:
        assert run.job_definition_id == job.id
        assert run.trigger is Trigger.SCHEDULE
        assert run.scheduled_for is not None
        assert run.id == scheduled_run_id(job.id, run.scheduled_for)
        lateness = run.created_at - run.scheduled_for
        assert timedelta(0) <= lateness <= MAX_LATENESS, (run.scheduled_for, run.created_at)
        ticks.append(run.scheduled_for)
    assert_consecutive_ticks(ticks, timedelta(seconds=2))


async def test_same_job_due_twice_is_one_run(settings: Settings, data_root: Path) -> None:
    job = await csv_job(settings, data_root, None)
    tick = utcnow().replace(microsecond=0)
    first_id = scheduled_run_id(job.id, tick)
    due = JobDue(
        job_definition_id=job.id, run_id=first_id, trigger=Trigger.SCHEDULE, scheduled_for=tick
    )
    second_id = uuid.uuid4()

    async with (
        tap(settings, TaskStarted.routing_key, RunFinished.routing_key) as t,
        engine_running(settings),
    ):
        bus = await connect_bus(settings.broker_url, settings.namespace)
        try:
            await bus.publish(due)
            await bus.publish(due)
            events = await collect_until(t, finished_run(first_id))
            # A third copy after the run finished; the coordinator takes its queue in order,
            # so once the next run has finished this copy has been handled too.
            await bus.publish(due)
            await bus.publish(JobDue(job_definition_id=job.id, run_id=second_id))
            events += await collect_until(t, finished_run(second_id))
        finally:
            await bus.close()

    announced = [e for e in events if isinstance(e, RunFinished)]
    assert [(e.run_id, e.status) for e in announced] == [
        (first_id, RunStatus.COMPLETED),
        (second_id, RunStatus.COMPLETED),
    ]
    extract = task_id(first_id, TaskType.EXTRACT)
    starts = [e for e in events if isinstance(e, TaskStarted) and e.task_id == extract]
    assert len(starts) == 1, f"the extract ran {len(starts)} times"
    runs = await all_runs(settings)
    assert sorted(r.id for r in runs) == sorted([first_id, second_id])
    run, tasks = await read_run(settings, first_id)
    assert run is not None
    assert run.status is RunStatus.COMPLETED
    assert run.trigger is Trigger.SCHEDULE
    assert run.scheduled_for == tick
    assert [(task.status, task.attempt_count) for task in tasks] == [(TaskStatus.COMPLETED, 1)] * 2
    with duckdb.connect(str(data_root / "out" / "wh.duckdb"), read_only=True) as con:
        rows = con.execute("select _orc_run_id, count(*) from people group by 1").fetchall()
    assert sorted(rows) == sorted([(str(first_id), CSV_ROWS), (str(second_id), CSV_ROWS)])


async def test_two_schedulers_make_one_run_per_tick(settings: Settings, data_root: Path) -> None:
    job = await csv_job(settings, data_root, EVERY_TWO_SECONDS)

    async with (
        tap(settings, *DUE_KEYS, RunFinished.routing_key) as t,
        engine_running(settings, ("coordinator", "worker")),
        engine_running(settings, ("scheduler",)),
        engine_running(settings, ("scheduler",)),
    ):
        finished: dict[uuid.UUID, RunFinished] = {}
        dues: list[JobDue] = []

        def three_runs_finished(event: Event) -> bool:
            if isinstance(event, JobDue):
                dues.append(event)
            elif isinstance(event, RunFinished):
                finished[event.run_id] = event
            return len(finished) >= 3

        await collect_until(t, three_runs_finished, timeout=40)

    assert all(f.status is RunStatus.COMPLETED for f in finished.values()), finished
    runs = await all_runs(settings)
    ticks = sorted(r.scheduled_for for r in runs if r.scheduled_for is not None)
    assert len(ticks) == len(runs) >= 3
    assert_consecutive_ticks(ticks, timedelta(seconds=2))
    assert {r.id for r in runs} == {scheduled_run_id(job.id, tick) for tick in ticks}
    # Both schedulers really fired: some tick was announced twice, yet made one run.
    per_tick = {
        tick: len(list(group))
        for tick, group in itertools.groupby(
            sorted(d.scheduled_for for d in dues if d.scheduled_for)
        )
    }
    assert max(per_tick.values()) == 2, per_tick
    assert set(per_tick) <= set(ticks) | {max(ticks) + timedelta(seconds=2)}


@contextlib.asynccontextmanager
async def scheduler_running(
    settings: Settings, clock: Callable[[], datetime]
) -> AsyncIterator[None]:
    """One scheduler built as `orc/runtime.py` builds it, with a clock the test reads."""
    bus = await connect_bus(settings.broker_url, settings.namespace)
    engine = make_engine(settings.database_url)
    task = asyncio.create_task(Scheduler(bus, make_sessionmaker(engine), clock=clock).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.close()
        await engine.dispose()


async def insert_run(settings: Settings, job: JobDefinition, tick: datetime) -> None:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            session.add(
                JobRun(
                    id=scheduled_run_id(job.id, tick),
                    job_definition_id=job.id,
                    status=RunStatus.COMPLETED,
                    trigger=Trigger.SCHEDULE,
                    scheduled_for=tick,
                    created_at=tick,
                    completed_at=tick,
                )
            )
    finally:
        await engine.dispose()


async def test_catch_up_after_downtime_fires_the_latest_missed_tick_once(
    settings: Settings, data_root: Path
) -> None:
    now = utcnow()
    job = await csv_job(settings, data_root, EVERY_SECOND, created_at=now - timedelta(minutes=1))
    last_run = now.replace(microsecond=0) - timedelta(seconds=10)
    await insert_run(settings, job, last_run)
    readings: list[datetime] = []

    def clock() -> datetime:
        readings.append(utcnow())
        return readings[-1]

    async with tap(settings, *DUE_KEYS) as t, scheduler_running(settings, clock):
        dues = [await t.next(JobDue, job_definition_id=job.id) for _ in range(3)]

    start = readings[0]  # what the scheduler took for "now" when it started
    catch_up = latest_tick(EVERY_SECOND, "UTC", start)
    assert catch_up is not None and catch_up > last_run
    assert dues[0].scheduled_for == catch_up
    assert [d for d in dues if d.scheduled_for is not None and d.scheduled_for <= start] == [
        dues[0]
    ]
    for due in dues:
        assert due.trigger is Trigger.SCHEDULE
        assert due.scheduled_for is not None
        assert due.run_id == scheduled_run_id(job.id, due.scheduled_for)
    # After the catch-up, the regular ticks follow one second apart.
    assert_consecutive_ticks(
        [d.scheduled_for for d in dues if d.scheduled_for], timedelta(seconds=1)
    )


async def test_unusable_schedules_do_not_stop_the_others(
    sqlite_settings: Settings, data_root: Path
) -> None:
    settings = sqlite_settings
    # Valid cron syntax that never fires (there is no 30 February), and a zone that does
    # not exist: the scheduler sets both aside and keeps the good job on time.
    await csv_job(settings, data_root, "0 0 30 2 *")
    await csv_job(settings, data_root, EVERY_SECOND, timezone="Mars/Olympus_Mons")
    good = await csv_job(settings, data_root, EVERY_SECOND)

    async with tap(settings, *DUE_KEYS) as t, engine_running(settings, ("scheduler",)):
        dues = [await t.next(JobDue, timeout=10) for _ in range(2)]

    assert {d.job_definition_id for d in dues} == {good.id}
    assert_consecutive_ticks(
        [d.scheduled_for for d in dues if d.scheduled_for], timedelta(seconds=1)
    )
