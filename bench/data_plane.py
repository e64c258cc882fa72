"""The data plane: moving a million rows through the engine against the tool alone.

    python bench/data_plane.py [--rows 1000000] [--repeat 5]

Two pipelines, each timed from publishing `JobDue` to the arrival of its `RunFinished`
COMPLETED (on a private queue bound to `run.finished`), through one `orc up --no-demo`
with its defaults (SQLite state store; its default worker processes: one on 2 cores),
against a baseline measured in the same run:

(a) CSV → DuckDB: a `--rows`-row CSV (id int, created_at timestamp, name text, amount
    double, city text; written by DuckDB's `COPY ... TO`) loaded by the `csv` extractor
    and the `duckdb` loader (mode `replace`, so every run does the same work).
    Baseline: DuckDB alone, `CREATE TABLE t AS SELECT * FROM read_csv(...)` into a fresh
    database file, from connect to close.
(b) Parquet → PostgreSQL: the same rows as one Parquet file, loaded by the `parquet`
    extractor and the `postgres` loader (mode `replace`) into a temporary PostgreSQL
    database made for the run and dropped after it.
    Baseline: read the Parquet file into Arrow (`pyarrow.parquet.read_table`) and
    binary-COPY it with ADBC's PostgreSQL driver (`cursor.adbc_ingest(..., mode="create")`)
    into a fresh table of the same database, from connect to commit.

Each is repeated `--repeat` times, baseline and engine in turn; the figures are medians
(of 5 by default: with 3, one slow round of either side moved the ratio by a tenth).
After the runs the destinations are counted: every table must hold exactly `--rows` rows.
Goal: engine / baseline ≤ 1.4 for both. The last line printed is one JSON object:
  {"benchmark": "data_plane", "csv_duckdb_engine_s", "csv_duckdb_baseline_s",
   "csv_duckdb_ratio", "parquet_pg_engine_s", "parquet_pg_baseline_s", "parquet_pg_ratio",
   "goal_ratio": 1.4, "met", ...}

Needs RabbitMQ (amqp://guest:guest@127.0.0.1:5672/) and PostgreSQL (127.0.0.1:5432, user
postgres, trust). The namespace, the temporary folder and the database are removed at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402
import throughput  # noqa: E402
from benchlib import FinishedTap  # noqa: E402

from common.bus import Bus, connect_bus, delete_namespace  # noqa: E402
from common.db.engine import make_engine, make_sessionmaker  # noqa: E402
from common.db.models import JobDefinition  # noqa: E402
from common.events import JobDue  # noqa: E402
from common.states import RunStatus, Trigger  # noqa: E402

BROKER = throughput.BROKER
PG_ADMIN = throughput.PG_ADMIN
GOAL_RATIO = 1.4
CSV_PATH = "in/bench.csv"
PARQUET_PATH = "in/bench.parquet"
DUCKDB_PATH = "out/bench.duckdb"
DUCKDB_TABLE = "bench"
PG_TABLE = "bench_parquet"

# The CSV's rows, made by DuckDB (deterministic: hashes of the row number, no random()).
ROWS_SQL = """
SELECT
    i AS id,
    TIMESTAMP '2026-01-01 00:00:00' + to_seconds(i * 7) AS created_at,
    'customer-' || lpad(CAST(hash(i) % 1000000 AS VARCHAR), 6, '0') AS name,
    round(CAST(hash(i * 31 + 7) % 1000000 AS DOUBLE) / 100.0, 2) AS amount,
    (['Berlin', 'Paris', 'Madrid', 'Rome', 'Vienna', 'Lisbon', 'Warsaw', 'Prague'])[i % 8 + 1]
        AS city
FROM range({rows}) t(i)
"""


def write_inputs(data_root: Path, rows: int) -> tuple[int, int]:
    """The CSV and the Parquet file (same rows); their sizes in bytes."""
    csv_file, parquet_file = data_root / CSV_PATH, data_root / PARQUET_PATH
    csv_file.parent.mkdir(parents=True, exist_ok=True)
    select = ROWS_SQL.format(rows=int(rows))
    with duckdb.connect() as con:
        con.execute(f"COPY ({select}) TO '{csv_file}' (FORMAT csv, HEADER)")
        con.execute(f"COPY ({select}) TO '{parquet_file}' (FORMAT parquet)")
    return csv_file.stat().st_size, parquet_file.stat().st_size


def duckdb_baseline(csv_file: Path, target: Path, rows: int) -> float:
    """DuckDB alone: the CSV into a fresh database file, connect to close."""
    started = time.perf_counter()
    con = duckdb.connect(str(target))
    try:
        con.execute("CREATE TABLE t AS SELECT * FROM read_csv(?)", [str(csv_file)])
    finally:
        con.close()
    seconds = time.perf_counter() - started
    with duckdb.connect(str(target), read_only=True) as check:
        count = check.execute("SELECT count(*) FROM t").fetchone()
    if count is None or count[0] != rows:
        raise RuntimeError(f"the DuckDB baseline loaded {count} rows, expected {rows}")
    target.unlink()
    return seconds


def postgres_baseline(parquet_file: Path, dsn: str, table: str, rows: int) -> float:
    """ADBC alone: Parquet → Arrow → binary COPY into a new table, connect to commit."""
    import adbc_driver_postgresql.dbapi as pg

    started = time.perf_counter()
    conn = pg.connect(dsn, autocommit=False)
    try:
        data = pq.read_table(parquet_file)
        with conn.cursor() as cursor:
            cursor.adbc_ingest(table, data, mode="create")
        conn.commit()
        seconds = time.perf_counter() - started
        with conn.cursor() as cursor:
            cursor.execute(f'SELECT count(*) FROM "{table}"')
            count = cursor.fetchone()
            cursor.execute(f'DROP TABLE "{table}"')
        conn.commit()
    finally:
        conn.close()
    if count is None or count[0] != rows:
        raise RuntimeError(f"the ADBC baseline loaded {count} rows, expected {rows}")
    return seconds


@contextlib.asynccontextmanager
async def temporary_pg_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (its libpq URI), dropped on exit."""
    name = f"orc_bench_dest_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def insert_jobs(url: str, dsn: str) -> tuple[uuid.UUID, uuid.UUID]:
    """The CSV → DuckDB job and the Parquet → PostgreSQL job."""
    db = make_engine(url)
    try:
        async with make_sessionmaker(db)() as session, session.begin():
            csv_job = JobDefinition(
                name=f"bench-csv-duckdb-{uuid.uuid4().hex[:6]}",
                extractor_type="csv",
                extractor_config={"path": CSV_PATH},
                loader_type="duckdb",
                loader_config={"database": DUCKDB_PATH, "table": DUCKDB_TABLE, "mode": "replace"},
                max_attempts=1,
            )
            pg_job = JobDefinition(
                name=f"bench-parquet-pg-{uuid.uuid4().hex[:6]}",
                extractor_type="parquet",
                extractor_config={"path": PARQUET_PATH},
                loader_type="postgres",
                loader_config={"dsn": dsn, "table": PG_TABLE, "mode": "replace"},
                max_attempts=1,
            )
            session.add_all([csv_job, pg_job])
        return csv_job.id, pg_job.id
    finally:
        await db.dispose()


async def engine_run(bus: Bus, tap: FinishedTap, job_id: uuid.UUID, timeout: float) -> float:
    """Seconds from publishing `JobDue` to its `RunFinished` COMPLETED."""
    run_id = uuid.uuid4()
    started = time.perf_counter()
    await bus.publish(JobDue(job_definition_id=job_id, run_id=run_id, trigger=Trigger.MANUAL))
    arrived, event = await tap.wait(run_id, timeout)
    if event.status is not RunStatus.COMPLETED:
        raise RuntimeError(f"run {run_id} ended {event.status}: {event.error_message}")
    return arrived - started


def duckdb_rows(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute(f"SELECT count(*) FROM {DUCKDB_TABLE}").fetchone()
    return int(row[0]) if row else -1


async def postgres_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{PG_TABLE}"'))
    finally:
        await conn.close()


async def check_destinations(duckdb_file: Path, dsn: str, rows: int) -> None:
    """Both tables the engine loaded hold exactly `rows` rows."""
    held = {"DuckDB": duckdb_rows(duckdb_file), "PostgreSQL": await postgres_rows(dsn)}
    wrong = {name: n for name, n in held.items() if n != rows}
    if wrong:
        raise RuntimeError(f"rows in the destination tables {wrong}, expected {rows}")
    print(f"destinations checked: {held}", flush=True)


async def measure(args: argparse.Namespace, times: dict[str, list[float]]) -> None:
    """Fill `times` (lists of seconds) as the runs go, so a failure keeps what was done."""
    ns = f"benchdp{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="orc-bench-data-plane-") as tmp:
        folder = Path(tmp)
        data_root = folder / "data"
        log = folder / "engine.log"
        started = time.perf_counter()
        csv_bytes, parquet_bytes = write_inputs(data_root, args.rows)
        print(
            f"inputs: {args.rows:,} rows, CSV {csv_bytes / 1e6:.1f} MB, Parquet "
            f"{parquet_bytes / 1e6:.1f} MB (written in {time.perf_counter() - started:.1f} s)",
            flush=True,
        )
        try:
            async with (
                throughput.database("sqlite", folder) as url,
                temporary_pg_database() as dsn,
            ):
                csv_job, pg_job = await insert_jobs(url, dsn)
                env = benchlib.engine_env(url, ns, folder, throughput.free_port())
                await (await connect_bus(BROKER, ns)).close()  # declare the topology first
                with benchlib.orc_up(env, log):
                    await throughput.wait_for_consumers(ns, 1)
                    bus = await connect_bus(BROKER, ns)
                    try:
                        tap = FinishedTap()
                        await tap.start(bus)
                        for i in range(args.repeat):
                            times["csv_baseline"].append(
                                await asyncio.to_thread(
                                    duckdb_baseline,
                                    data_root / CSV_PATH,
                                    folder / f"baseline-{i}.duckdb",
                                    args.rows,
                                )
                            )
                            times["csv_engine"].append(
                                await engine_run(bus, tap, csv_job, args.timeout)
                            )
                            times["pg_baseline"].append(
                                await asyncio.to_thread(
                                    postgres_baseline,
                                    data_root / PARQUET_PATH,
                                    dsn,
                                    f"bench_baseline_{i}",
                                    args.rows,
                                )
                            )
                            times["pg_engine"].append(
                                await engine_run(bus, tap, pg_job, args.timeout)
                            )
                            print(
                                f"  round {i + 1}: "
                                + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                                flush=True,
                            )
                    finally:
                        await bus.close()
                await check_destinations(data_root / DUCKDB_PATH, dsn, args.rows)
        except BaseException:
            tail = benchlib.log_tail(log)
            if tail:
                print(f"--- engine log (last lines) ---\n{tail}\n---", file=sys.stderr)
            raise
        finally:
            await delete_namespace(BROKER, ns)


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per engine run")
    args = parser.parse_args()
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")

    times: dict[str, list[float]] = {
        "csv_baseline": [],
        "csv_engine": [],
        "pg_baseline": [],
        "pg_engine": [],
    }
    error: str | None = None
    try:
        asyncio.run(measure(args, times))
    except Exception as exc:
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"

    csv_engine, csv_base = median(times["csv_engine"]), median(times["csv_baseline"])
    pg_engine, pg_base = median(times["pg_engine"]), median(times["pg_baseline"])
    csv_ratio = round(csv_engine / csv_base, 2) if csv_engine and csv_base else None
    pg_ratio = round(pg_engine / pg_base, 2) if pg_engine and pg_base else None

    print()
    print(f"data plane, {args.rows:,} rows, median of {args.repeat}, {os.cpu_count()} CPUs")
    print(f"{'pipeline':<26}{'engine s':>10}{'baseline s':>12}{'ratio':>8}  baseline")
    for label, engine_s, base_s, r, baseline in (
        ("CSV → DuckDB", csv_engine, csv_base, csv_ratio, "duckdb read_csv CTAS"),
        ("Parquet → PostgreSQL", pg_engine, pg_base, pg_ratio, "pyarrow + ADBC ingest"),
    ):
        print(f"{label:<26}{engine_s!s:>10}{base_s!s:>12}{r!s:>8}  {baseline}")
    met = bool(
        error is None
        and csv_ratio is not None
        and pg_ratio is not None
        and csv_ratio <= GOAL_RATIO
        and pg_ratio <= GOAL_RATIO
    )
    print(f"goal: engine / baseline ≤ {GOAL_RATIO} for both: {'met' if met else 'not met'}")
    summary: dict[str, Any] = {
        "benchmark": "data_plane",
        "rows": args.rows,
        "repeat": args.repeat,
        "csv_duckdb_engine_s": csv_engine,
        "csv_duckdb_baseline_s": csv_base,
        "csv_duckdb_ratio": csv_ratio,
        "parquet_pg_engine_s": pg_engine,
        "parquet_pg_baseline_s": pg_base,
        "parquet_pg_ratio": pg_ratio,
        "goal_ratio": GOAL_RATIO,
        "met": met,
    }
    if error is not None:
        summary["error"] = error
    print(json.dumps(summary))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
