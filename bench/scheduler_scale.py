"""The cron scheduler at scale: 10,000 jobs due every minute, tick by tick.

    python bench/scheduler_scale.py [--jobs 10000] [--ticks 2] [--store sqlite|postgres]

What it does:

1. makes a fresh state store (a SQLite file, or a temporary PostgreSQL database with
   `--store postgres`), migrated;
2. declares the namespace's topology and measures the in-run reference ("raw publish of
   10k events"): one process publishing `--jobs` `JobDue` events with the project's `Bus`
   (`publish` in `asyncio.gather` chunks of 500, confirms pipelined), `--repeat` times; the
   time until every confirm is back (and, for information, until the last event reached a
   private queue). There is no outside baseline: no other scheduler runs here;
3. binds a private queue of its own to `job.due` and `jobs.due` and records the
   wall-clock arrival of every `JobDue`, and of every run a `JobsDue` carries (the
   scheduler sends a tick's runs 100 to a `JobsDue`), on it;
4. waits, if need be, until it is at least `--margin` seconds before a minute boundary,
   bulk-inserts `--jobs` enabled jobs scheduled `* * * * *` (`generate` → `null`) and a
   sentinel job (see below), and starts ONLY the scheduler (`python -m orc scheduler`):
   no coordinator or worker, so only the orchestration is measured (the events pile up
   in the coordinator's queue, deleted at the end);
5. observes `--ticks` minute ticks: T1 is the first minute boundary after the scheduler
   started, T2 = T1 + 60 s, ... For every run due with `scheduled_for` in those ticks, the
   lag is its arrival minus `scheduled_for`. Every job must arrive exactly once per tick:
   a (job, tick) with no event is "missed", every extra one "doubled". After the last
   tick it waits until every job's event arrived (at most `--grace` seconds), then
   `--linger` seconds more for late doubles.

Catch-up: at start the scheduler fires, once, the latest tick each job missed while no
scheduler ran, if that tick is after the job's creation (scheduler/cron_scheduler.py).
The jobs are inserted just before the start, with no minute boundary in between, so they
have none; any event for a tick before the start would be a catch-up, and is counted
("catch_up_events", expected 0) but not judged. The first boundary after the start is
judged like the others: `--margin` (default 20 s) leaves the scheduler time to load its
jobs first. To check it did, one more job (the sentinel, not judged) is created two
minutes ago and inserted last: the scheduler reads jobs in table order, so the arrival of
the sentinel's catch-up event marks the end of its initial load ("startup_s"), reported
with whether that came before the first judged tick ("ready_before_first_tick").

Goal: p99 lag ≤ 1 s, 0 missed, 0 doubled. The last line printed is one JSON object:
  {"benchmark": "scheduler_scale", "jobs", "ticks", "lag_p50_s", "lag_p99_s", "lag_max_s",
   "missed", "doubled", "raw_publish_10k_s", "ratio_p99_lag_vs_raw_publish",
   "goal_lag_p99_s", "met", ...}
With the default `--ticks 2` it takes about 1.5 to 2.5 minutes (it waits on the clock);
`--ticks 1` saves a minute.

Needs RabbitMQ (amqp://guest:guest@127.0.0.1:5672/) and, with `--store postgres`,
PostgreSQL at 127.0.0.1:5432 (user postgres). The namespace's queues, the temporary
folder and database are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402
import throughput  # noqa: E402
from benchlib import percentile  # noqa: E402

from common.bus import Bus, connect_bus, delete_namespace  # noqa: E402
from common.db.engine import make_engine, make_sessionmaker  # noqa: E402
from common.db.models import JobDefinition  # noqa: E402
from common.events import JobDue, JobsDue  # noqa: E402
from common.topology import coordinator_queue  # noqa: E402

BROKER = throughput.BROKER
GOAL_LAG_P99_S = 1.0
SCHEDULE = "* * * * *"
CHUNK = 500


def job_row(name: str, created: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "name": name,
        "schedule": SCHEDULE,
        "timezone": "UTC",
        "extractor_type": "generate",
        "extractor_config": {"rows": 1},
        "loader_type": "null",
        "loader_config": {},
        "max_attempts": 1,
        "enabled": True,
        "created_at": created,
        "updated_at": created,
    }


async def insert_jobs(url: str, count: int) -> tuple[set[uuid.UUID], uuid.UUID, float]:
    """`count` jobs due every minute, created now, then the sentinel job (created two
    minutes ago, inserted last); the jobs' ids, the sentinel's, and the seconds the bulk
    insert took."""
    now = datetime.now(UTC)
    rows = [job_row(f"bench-cron-{i:06d}", now) for i in range(count)]
    sentinel = job_row("bench-cron-sentinel", now - timedelta(minutes=2))
    db = make_engine(url)
    try:
        started = time.perf_counter()
        async with make_sessionmaker(db)() as session, session.begin():
            for i in range(0, count, 2000):
                await session.execute(insert(JobDefinition), rows[i : i + 2000])
            await session.execute(insert(JobDefinition), [sentinel])
        return {row["id"] for row in rows}, sentinel["id"], time.perf_counter() - started
    finally:
        await db.dispose()


class DueTap:
    """Records the wall-clock arrival and the body of every `JobDue` and `JobsDue` on a
    private queue.

    The callback only appends: parsing happens later, off the arrival path.
    """

    def __init__(self) -> None:
        self.received: list[tuple[float, bytes]] = []

    async def start(self, bus: Bus) -> None:
        queue = await bus.declare_private_queue([JobDue.routing_key, JobsDue.routing_key])
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.received.append((time.time(), message.body))


@dataclass
class Observation:
    """What arrived, (job, tick) by (job, tick)."""

    first_arrival: dict[tuple[uuid.UUID, datetime], float] = field(default_factory=dict)
    publish_lag: dict[tuple[uuid.UUID, datetime], float] = field(default_factory=dict)
    counts: Counter[tuple[uuid.UUID, datetime]] = field(default_factory=Counter)
    parsed: int = 0
    unscheduled: int = 0

    def parse_new(self, received: list[tuple[float, bytes]]) -> None:
        end = len(received)
        for arrived, body in received[self.parsed : end]:
            data = json.loads(body)
            occurred = datetime.fromisoformat(data["occurred_at"]).timestamp()
            for run in data.get("runs", [data]):
                self._count(arrived, occurred, run)
        self.parsed = end

    def _count(self, arrived: float, occurred: float, run: dict[str, Any]) -> None:
        if run.get("scheduled_for") is None:
            self.unscheduled += 1
            return
        tick = datetime.fromisoformat(run["scheduled_for"]).astimezone(UTC)
        key = (uuid.UUID(run["job_definition_id"]), tick)
        self.counts[key] += 1
        if key not in self.first_arrival:
            self.first_arrival[key] = arrived
            self.publish_lag[key] = occurred - tick.timestamp()

    def arrived_for(self, tick: datetime, jobs: set[uuid.UUID]) -> int:
        return sum(1 for job, t in self.first_arrival if t == tick and job in jobs)


async def raw_publish(bus: Bus, job_ids: list[uuid.UUID]) -> tuple[float, float]:
    """Seconds to publish one `JobDue` per job with pipelined confirms, and until the last
    one reached a private queue bound to `job.due`."""
    events = [JobDue(job_definition_id=job_id, run_id=uuid.uuid4()) for job_id in job_ids]
    queue = await bus.declare_private_queue([JobDue.routing_key])
    done = asyncio.Event()
    seen = 0
    last_arrival = 0.0

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal seen, last_arrival
        seen += 1
        if seen == len(events):
            last_arrival = time.perf_counter()
            done.set()

    tag = await queue.consume(on_message, no_ack=True)
    try:
        started = time.perf_counter()
        for i in range(0, len(events), CHUNK):
            await asyncio.gather(*(bus.publish(e) for e in events[i : i + CHUNK]))
        confirmed = time.perf_counter() - started
        async with asyncio.timeout(120):
            await done.wait()
        return confirmed, last_arrival - started
    finally:
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)


async def purge_coordinator_queue(ns: str) -> None:
    connection = await aio_pika.connect(BROKER)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(coordinator_queue(ns), passive=True)
        await queue.purge()
    finally:
        await connection.close()


def next_minute(moment: float) -> float:
    """The first minute boundary strictly after `moment` (epoch seconds)."""
    return (math.floor(moment / 60) + 1) * 60.0


async def wait_for_launch(margin: float) -> None:
    """Return at least `margin` seconds before the next minute boundary."""
    now = time.time()
    boundary = next_minute(now)
    if boundary - now < margin:
        print(
            f"waiting {boundary - now + 0.5:.1f} s for the next minute, so the scheduler "
            f"starts at least {margin:g} s before a tick",
            flush=True,
        )
        await asyncio.sleep(boundary - now + 0.5)


def start_scheduler(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "orc", "scheduler"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@dataclass
class Result:
    jobs: int = 0
    insert_s: float | None = None
    raw_confirmed_s: list[float] = field(default_factory=list)
    raw_arrived_s: list[float] = field(default_factory=list)
    ticks: list[datetime] = field(default_factory=list)
    startup_s: float | None = None
    first_tick_after_s: float | None = None
    lags: list[float] = field(default_factory=list)
    publish_lags: list[float] = field(default_factory=list)
    per_tick: list[dict[str, Any]] = field(default_factory=list)
    missed: int = 0
    doubled: int = 0
    catch_up_events: int = 0
    other_events: int = 0


async def observe(
    args: argparse.Namespace, url: str, env: dict[str, str], log: Path, bus: Bus, result: Result
) -> None:
    tap = DueTap()
    await tap.start(bus)
    await wait_for_launch(args.margin)
    # Inserted only now, so no boundary passes between their creation and the start: a
    # job created before the latest tick would be caught up at start (all but the sentinel).
    job_ids, sentinel, result.insert_s = await insert_jobs(url, args.jobs)
    result.jobs = len(job_ids)
    print(f"inserted {args.jobs:,} jobs (+ the sentinel) in {result.insert_s:.2f} s", flush=True)
    launched = time.time()
    process = start_scheduler(env, log)
    try:
        first = next_minute(launched)
        result.ticks = [datetime.fromtimestamp(first + 60 * k, UTC) for k in range(args.ticks)]
        print(
            f"scheduler started at {datetime.fromtimestamp(launched, UTC):%H:%M:%S}; judging "
            f"ticks {', '.join(f'{t:%H:%M}' for t in result.ticks)}",
            flush=True,
        )
        obs = Observation()
        last_tick = result.ticks[-1].timestamp()
        judged = set(result.ticks)
        done_at: float | None = None
        reported: set[datetime] = set()
        while True:
            await asyncio.sleep(0.25)
            if process.poll() is not None:
                raise RuntimeError(f"the scheduler exited with code {process.returncode}")
            obs.parse_new(tap.received)
            now = time.time()
            if result.startup_s is None:
                early = [
                    a
                    for (job, t), a in obs.first_arrival.items()
                    if job == sentinel and t.timestamp() < launched
                ]
                if early:
                    result.startup_s = early[0] - launched
                    print(
                        f"  the scheduler had loaded its jobs {result.startup_s:.2f} s after "
                        f"start (the sentinel's catch-up arrived)",
                        flush=True,
                    )
            for tick in result.ticks:
                if tick not in reported and now >= tick.timestamp() + 1:
                    arrived = obs.arrived_for(tick, job_ids)
                    if arrived >= len(job_ids) or now >= tick.timestamp() + args.grace:
                        reported.add(tick)
                        print(f"  tick {tick:%H:%M}: {arrived} of {len(job_ids)} jobs", flush=True)
            if done_at is None and (
                obs.arrived_for(result.ticks[-1], job_ids) >= len(job_ids)
                or now >= last_tick + args.grace
            ):
                done_at = now
            if done_at is not None and now >= done_at + args.linger:
                break
    finally:
        benchlib.stop_process(process, grace_seconds=20)
    obs.parse_new(tap.received)

    result.first_tick_after_s = first - launched
    for (job_id, tick), count in obs.counts.items():
        if job_id == sentinel:
            continue
        if tick.timestamp() < launched:
            result.catch_up_events += count
        elif tick not in judged or job_id not in job_ids:
            result.other_events += count
    result.other_events += obs.unscheduled
    for tick in result.ticks:
        lags = []
        for job_id in job_ids:
            count = obs.counts.get((job_id, tick), 0)
            if count == 0:
                result.missed += 1
                continue
            result.doubled += count - 1
            lags.append(obs.first_arrival[(job_id, tick)] - tick.timestamp())
            result.publish_lags.append(obs.publish_lag[(job_id, tick)])
        result.lags.extend(lags)
        result.per_tick.append(
            {
                "tick": tick.strftime("%H:%M"),
                "arrived": len(lags),
                "p50_s": round(percentile(lags, 50), 3) if lags else None,
                "p99_s": round(percentile(lags, 99), 3) if lags else None,
                "max_s": round(max(lags), 3) if lags else None,
            }
        )


async def measure(args: argparse.Namespace, result: Result) -> None:
    ns = f"benchsched{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="orc-bench-scheduler-") as tmp:
        folder = Path(tmp)
        log = folder / "scheduler.log"
        try:
            async with throughput.database(args.store, folder) as url:
                bus = await connect_bus(BROKER, ns)  # declares the topology
                try:
                    ids = [uuid.uuid4() for _ in range(args.jobs)]
                    for _ in range(args.repeat):
                        confirmed, arrived = await raw_publish(bus, ids)
                        result.raw_confirmed_s.append(confirmed)
                        result.raw_arrived_s.append(arrived)
                    await purge_coordinator_queue(ns)
                    print(
                        f"raw publish of {len(ids):,} JobDue: "
                        f"{[round(s, 2) for s in result.raw_confirmed_s]} s",
                        flush=True,
                    )
                    env = benchlib.engine_env(url, ns, folder, throughput.free_port())
                    await observe(args, url, env, log, bus, result)
                finally:
                    await bus.close()
        except BaseException:
            tail = benchlib.log_tail(log)
            if tail:
                print(f"--- scheduler log (last lines) ---\n{tail}\n---", file=sys.stderr)
            raise
        finally:
            await delete_namespace(BROKER, ns)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--ticks", type=int, default=2, help="minute ticks to judge")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the raw publish")
    parser.add_argument(
        "--margin", type=float, default=20.0, help="least seconds from start to the first tick"
    )
    parser.add_argument(
        "--grace", type=float, default=30.0, help="most seconds to wait for a tick's events"
    )
    parser.add_argument(
        "--linger", type=float, default=2.0, help="seconds to watch for doubles at the end"
    )
    args = parser.parse_args()
    if args.jobs < 1 or args.ticks < 1 or args.repeat < 1:
        parser.error("--jobs, --ticks and --repeat must be at least 1")

    result = Result()
    error: str | None = None
    try:
        asyncio.run(measure(args, result))
    except Exception as exc:
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"

    lag_p50 = percentile(result.lags, 50) if result.lags else None
    lag_p99 = percentile(result.lags, 99) if result.lags else None
    lag_max = max(result.lags) if result.lags else None
    raw = statistics.median(result.raw_confirmed_s) if result.raw_confirmed_s else None
    raw_arrived = statistics.median(result.raw_arrived_s) if result.raw_arrived_s else None
    ratio = round(lag_p99 / raw, 2) if lag_p99 is not None and raw else None
    ready = (
        result.startup_s is not None
        and result.first_tick_after_s is not None
        and result.startup_s < result.first_tick_after_s
    )
    met = bool(
        error is None
        and lag_p99 is not None
        and lag_p99 <= GOAL_LAG_P99_S
        and result.missed == 0
        and result.doubled == 0
    )

    print()
    print(
        f"scheduler at scale: {result.jobs:,} jobs '{SCHEDULE}', {len(result.ticks)} ticks, "
        f"store {args.store}, {os.cpu_count()} CPUs"
    )
    print(f"{'tick':<8}{'arrived':>9}{'p50 s':>9}{'p99 s':>9}{'max s':>9}")
    for row in result.per_tick:
        print(
            f"{row['tick']:<8}{row['arrived']:>9}{row['p50_s']!s:>9}{row['p99_s']!s:>9}"
            f"{row['max_s']!s:>9}"
        )
    print()
    rows: list[tuple[str, Any]] = [
        ("lag p50 s (arrival - tick)", rounded(lag_p50)),
        ("lag p99 s", rounded(lag_p99)),
        ("lag max s", rounded(lag_max)),
        (
            "publish lag p99 s (occurred_at)",
            rounded(percentile(result.publish_lags, 99)) if result.publish_lags else None,
        ),
        ("missed (job, tick)", result.missed),
        ("doubled (job, tick)", result.doubled),
        ("catch-up events (not judged)", result.catch_up_events),
        ("scheduler startup s (sentinel)", rounded(result.startup_s, 2)),
        ("first judged tick after start s", rounded(result.first_tick_after_s, 2)),
        (f"raw publish of {result.jobs:,} events s", rounded(raw)),
        ("  ... until all arrived s", rounded(raw_arrived)),
        ("ratio p99 lag / raw publish", ratio),
    ]
    for label, value in rows:
        print(f"{label:<36}{value!s:>10}")
    if result.ticks and not ready:
        print("note: the scheduler was not seen ready before the first judged tick (--margin)")
    print(f"goal: p99 ≤ {GOAL_LAG_P99_S:g} s, 0 missed, 0 doubled: {'met' if met else 'not met'}")
    summary: dict[str, Any] = {
        "benchmark": "scheduler_scale",
        "store": args.store,
        "jobs": result.jobs,
        "ticks": len(result.ticks),
        "lag_p50_s": rounded(lag_p50),
        "lag_p99_s": rounded(lag_p99),
        "lag_max_s": rounded(lag_max),
        "missed": result.missed,
        "doubled": result.doubled,
        "catch_up_events": result.catch_up_events,
        "other_events": result.other_events,
        "startup_s": rounded(result.startup_s, 2),
        "first_tick_after_start_s": rounded(result.first_tick_after_s, 2),
        "ready_before_first_tick": ready,
        "insert_s": rounded(result.insert_s, 2),
        "raw_publish_10k_s": rounded(raw),
        "raw_publish_10k_arrived_s": rounded(raw_arrived),
        "ratio_p99_lag_vs_raw_publish": ratio,
        "goal_lag_p99_s": GOAL_LAG_P99_S,
        "goal_missed": 0,
        "goal_doubled": 0,
        "met": met,
    }
    if error is not None:
        summary["error"] = error
    print(json.dumps(summary))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
