"""Benchmark: a CSV goes from trigger (`JobDue` published) to `RunFinished` COMPLETED.

The goal (the issue's): "a 100,000-row CSV goes from trigger to COMPLETED in under 3 seconds
on this machine". The script

1. makes a temporary folder with a data root, a staging folder and a SQLite state store
   (migrated), and picks a unique broker namespace;
2. writes a CSV of `--rows` rows (columns: int, timestamp, text, double, text);
3. measures the baseline: DuckDB alone loading that CSV into a fresh database file
   (`CREATE TABLE t AS SELECT * FROM read_csv(...)`), `--repeat` times;
4. starts an engine in this process (run-coordinator + worker, as `orc up` would), inserts
   a csv -> duckdb job (mode `replace`, so every run does the same work), then `--repeat`
   times publishes `JobDue` with a fresh run id and waits for that run's `RunFinished`
   on a private queue bound to `run.finished`; the time between the two is the figure;
5. deletes the namespace's queues and exchanges and the temporary folder.

It prints a table, and as its last line one JSON object:
  {"benchmark": "trigger_to_done_100k", "median_s", "p_max_s", "baseline_duckdb_s",
   "ratio", "goal_s", "met", ...}
`ratio` is median_s / baseline_duckdb_s. The exit code is 1 when a run did not complete,
and with `--check` also 2 when the goal was not met.

Needs RabbitMQ at `--broker-url` (default ORC_BROKER_URL or amqp://guest:guest@127.0.0.1:5672/).

`--database-url` runs the state store elsewhere, e.g.
  --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/orc_bench
The script creates no database there: the database must exist. It applies the migrations
(a no-op when they are current) and leaves the job and its runs in it, under a job name
that carries the namespace.

Run it from the repository root with the project installed: python bench/trigger_to_done.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import duckdb
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import select

from common.bus import Bus, connect_bus, delete_namespace
from common.db.engine import make_engine, make_sessionmaker
from common.db.migrate import upgrade
from common.db.models import JobDefinition, JobRun, Task
from common.events import JobDue, RunFinished
from common.settings import Settings
from common.states import RunStatus, TaskType, Trigger
from common.topology import topology
from orc import runtime

T = TypeVar("T")

GOAL_SECONDS = 3.0
CSV_PATH = "in/bench.csv"
DUCKDB_PATH = "out/bench.duckdb"
TABLE = "bench"
CITIES = ["Berlin", "Paris", "Madrid", "Rome", "Vienna", "Lisbon", "Warsaw", "Prague"]


@dataclass
class RunResult:
    run_id: uuid.UUID
    seconds: float
    status: RunStatus
    error: str | None
    extract_s: float | None = None
    load_s: float | None = None


def write_csv(path: Path, rows: int) -> int:
    """Columns: id (int), created_at (timestamp), name (text), amount (double), city (text)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(42)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "created_at", "name", "amount", "city"])
        for i in range(rows):
            writer.writerow(
                [
                    i,
                    (start + timedelta(seconds=i * 7)).strftime("%Y-%m-%d %H:%M:%S"),
                    f"customer-{rng.randrange(1_000_000):06d}",
                    round(rng.uniform(0, 10_000), 2),
                    CITIES[i % len(CITIES)],
                ]
            )
    return path.stat().st_size


def duckdb_baseline(csv_path: Path, folder: Path, repeat: int, rows: int) -> list[float]:
    """DuckDB alone: the same CSV into a fresh database file, connect to close."""
    folder.mkdir(parents=True, exist_ok=True)
    times = []
    for i in range(repeat):
        target = folder / f"baseline-{i}.duckdb"
        started = time.perf_counter()
        con = duckdb.connect(str(target))
        try:
            con.execute("CREATE TABLE t AS SELECT * FROM read_csv(?)", [str(csv_path)])
        finally:
            con.close()
        times.append(time.perf_counter() - started)
        with duckdb.connect(str(target), read_only=True) as check:
            count = check.execute("SELECT count(*) FROM t").fetchone()
        if count is None or count[0] != rows:
            raise RuntimeError(f"baseline loaded {count} rows, expected {rows}")
    return times


class FinishedTap:
    """Records when each `RunFinished` arrives, on a private queue bound to run.finished."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.arrived: dict[uuid.UUID, tuple[float, RunFinished]] = {}
        self.changed = asyncio.Condition()

    async def start(self) -> None:
        queue = await self.bus.declare_private_queue([RunFinished.routing_key])
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        at = time.perf_counter()
        event = RunFinished.model_validate_json(message.body)
        async with self.changed:
            self.arrived[event.run_id] = (at, event)
            self.changed.notify_all()

    async def wait(self, run_id: uuid.UUID, timeout: float) -> tuple[float, RunFinished]:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: run_id in self.arrived)
            return self.arrived[run_id]


class EngineStopped(RuntimeError):
    """A component of the engine under test returned or failed while runs were awaited."""


@contextlib.asynccontextmanager
async def engine_running(
    settings: Settings, concurrency: int
) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run-coordinator and a worker for every task queue, in this event loop.

    Yields the components' tasks, so a caller can stop waiting when one of them dies.
    """
    components = [runtime.run_coordinator, runtime.worker_runner(runtime.ALL_QUEUES, concurrency)]
    async with runtime.resources(settings) as res:
        tasks = [asyncio.create_task(component(res)) for component in components]
        try:
            yield tasks
        finally:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    raise result


async def unless_engine_stops(awaitable: Awaitable[T], engine: list[asyncio.Task[None]]) -> T:
    """Await `awaitable`, or raise `EngineStopped` as soon as an engine component ends."""
    waiter = asyncio.ensure_future(awaitable)
    try:
        await asyncio.wait([waiter, *engine], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not waiter.done():
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    if waiter.cancelled() or (not waiter.done()):
        stopped = next(task for task in engine if task.done())
        error = None if stopped.cancelled() else stopped.exception()
        raise EngineStopped(f"an engine component stopped: {error!r}") from error
    return waiter.result()


async def wait_for_consumers(settings: Settings, timeout: float = 30.0) -> None:
    """Until the coordinator queue and both task queues have a consumer."""
    t = topology(settings.namespace)
    connection = await aio_pika.connect(settings.broker_url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                channel = await connection.channel()
                counts = []
                for spec in t.queues:
                    queue = await channel.declare_queue(spec.name, passive=True)
                    counts.append(queue.declaration_result.consumer_count or 0)
                await channel.close()
                if all(counts):
                    return
                await asyncio.sleep(0.05)
    finally:
        await connection.close()


async def insert_job(settings: Settings) -> uuid.UUID:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            job = JobDefinition(
                name=f"bench-{settings.namespace}",
                extractor_type="csv",
                extractor_config={"path": CSV_PATH},
                loader_type="duckdb",
                loader_config={"database": DUCKDB_PATH, "table": TABLE, "mode": "replace"},
                max_attempts=1,
            )
            session.add(job)
        return job.id
    finally:
        await engine.dispose()


async def task_durations(settings: Settings, results: list[RunResult]) -> None:
    """Fill in each run's extract and load durations as the state store recorded them."""
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            for result in results:
                tasks = (
                    await session.execute(select(Task).where(Task.job_run_id == result.run_id))
                ).scalars()
                for task in tasks:
                    if task.started_at is None or task.completed_at is None:
                        continue
                    seconds = (task.completed_at - task.started_at).total_seconds()
                    if task.task_type is TaskType.EXTRACT:
                        result.extract_s = seconds
                    else:
                        result.load_s = seconds
                run = await session.get(JobRun, result.run_id)
                if run is None:
                    result.error = (result.error or "") + " (run missing from the state store)"
    finally:
        await engine.dispose()


async def measure_engine(
    settings: Settings, repeat: int, concurrency: int, timeout: float, results: list[RunResult]
) -> None:
    """Append one result per run to `results` (kept if a later run raises)."""
    job_id = await insert_job(settings)
    async with engine_running(settings, concurrency) as engine:
        await unless_engine_stops(wait_for_consumers(settings), engine)
        bus = await connect_bus(settings.broker_url, settings.namespace)
        try:
            tap = FinishedTap(bus)
            await tap.start()
            for _ in range(repeat):
                run_id = uuid.uuid4()
                started = time.perf_counter()
                await bus.publish(
                    JobDue(job_definition_id=job_id, run_id=run_id, trigger=Trigger.MANUAL)
                )
                arrived, event = await unless_engine_stops(tap.wait(run_id, timeout), engine)
                results.append(
                    RunResult(run_id, arrived - started, event.status, event.error_message)
                )
                if event.status is not RunStatus.COMPLETED:
                    break
        finally:
            await bus.close()
    await task_durations(settings, results)


def loaded_rows(data_root: Path) -> int:
    with duckdb.connect(str(data_root / DUCKDB_PATH), read_only=True) as con:
        row = con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    return int(row[0]) if row else 0


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}"


def print_table(
    args: argparse.Namespace,
    csv_bytes: int,
    results: list[RunResult],
    baseline: list[float],
    summary: dict[str, Any],
) -> None:
    store = args.database_url.split("://", 1)[0] if args.database_url else "sqlite+aiosqlite"
    print(
        f"trigger -> COMPLETED, {args.rows:,} rows ({csv_bytes / 1e6:.1f} MB CSV), "
        f"state store {store}, Python {platform.python_version()}, duckdb {duckdb.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    print()
    header = ("run", "status", "total s", "extract s", "load s", "baseline s")
    print("{:>4} {:<10} {:>9} {:>10} {:>8} {:>11}".format(*header))
    for i, result in enumerate(results):
        base = baseline[i] if i < len(baseline) else None
        print(
            f"{i + 1:>4} {result.status.value:<10} {fmt(result.seconds):>9} "
            f"{fmt(result.extract_s):>10} {fmt(result.load_s):>8} {fmt(base):>11}"
        )
    print()
    print(f"{'figure':<28} {'value':>8}")
    for key in ("median_s", "p_max_s", "baseline_duckdb_s", "ratio", "goal_s"):
        print(f"{key:<28} {summary[key]!s:>8}")
    print(f"{'met (median < goal)':<28} {summary['met']!s:>8}")
    for result in results:
        if result.error:
            print(f"run {result.run_id}: {result.error}")
    if "error" in summary:
        print(f"error: {summary['error']}")


async def main_async(args: argparse.Namespace) -> int:
    namespace = f"bench{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="orc-bench-") as tmp:
        folder = Path(tmp)
        data_root = folder / "data"
        database_url = args.database_url or f"sqlite+aiosqlite:///{folder / 'orc.db'}"
        await asyncio.to_thread(upgrade, database_url)
        settings = Settings(
            database_url=database_url,
            broker_url=args.broker_url,
            namespace=namespace,
            staging_url=str(folder / "staging"),
            data_root=data_root,
            # In the run's folder, not `.orc/` of the current directory.
            secret_key_file=folder / "secret.key",
            token_file=folder / "token",
        )
        csv_bytes = write_csv(data_root / CSV_PATH, args.rows)
        baseline = duckdb_baseline(
            data_root / CSV_PATH, folder / "baseline", args.repeat, args.rows
        )
        results: list[RunResult] = []
        error: str | None = None
        try:
            await measure_engine(settings, args.repeat, args.concurrency, args.timeout, results)
        except Exception as exc:
            traceback.print_exc()
            error = f"{type(exc).__name__}: {exc}"
        finally:
            await delete_namespace(args.broker_url, namespace)
        completed = [r for r in results if r.status is RunStatus.COMPLETED]
        all_completed = error is None and len(completed) == args.repeat
        if all_completed and (held := loaded_rows(data_root)) != args.rows:
            error = f"the table holds {held} rows, expected {args.rows}"
            all_completed = False

    times = [r.seconds for r in completed]
    median = statistics.median(times) if times else None
    base = statistics.median(baseline)
    summary: dict[str, Any] = {
        "benchmark": f"trigger_to_done_{args.rows // 1000}k"
        if args.rows % 1000 == 0
        else f"trigger_to_done_{args.rows}",
        "median_s": None if median is None else round(median, 3),
        "p_max_s": round(max(times), 3) if times else None,
        "baseline_duckdb_s": round(base, 3),
        "ratio": None if median is None else round(median / base, 2),
        "goal_s": GOAL_SECONDS,
        "met": bool(all_completed and median is not None and median < GOAL_SECONDS),
        "rows": args.rows,
        "repeat": args.repeat,
        "runs_completed": len(completed),
    }
    if error is not None:
        summary["error"] = error
    print_table(args, csv_bytes, results, baseline, summary)
    print(json.dumps(summary))
    if not all_completed:
        return 1
    if args.check and not summary["met"]:
        return 2
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time a CSV -> DuckDB job from JobDue to RunFinished COMPLETED.",
        epilog="A --database-url must name an existing database; nothing is created there "
        "but the schema (migrations) and the benchmark's job and runs.",
    )
    parser.add_argument("--rows", type=int, default=100_000, help="CSV rows (default 100000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs to time (default 5)")
    parser.add_argument(
        "--database-url",
        default=None,
        help="state store URL (default: a SQLite file in the temporary folder); e.g. "
        "postgresql+asyncpg://postgres@127.0.0.1:5432/orc_bench (must exist)",
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("ORC_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        help="AMQP URL (default ORC_BROKER_URL or the local broker)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="worker slots (default 4)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for one run (default 120)"
    )
    parser.add_argument("--check", action="store_true", help="exit 2 when the goal is not met")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
