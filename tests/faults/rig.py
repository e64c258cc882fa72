"""What every scenario shares: a batch of CSV → DuckDB runs, the wait for them to settle,
and the invariant check.

The invariant: every accepted run reaches its expected final status within a bound; no run
is duplicated (the store holds exactly the planned run ids); every completed run's rows are
in its destination exactly once (rows per `_orc_run_id` in DuckDB = rows of its CSV), and a
failed run loaded nothing.

Each run has a job, a CSV and a DuckDB file of its own. DuckDB lets one process write a
file at a time: runs sharing a file would fail their loads on each other's lock and retry,
which spends attempts and back-off time on something unrelated to the fault under test.
"""

from __future__ import annotations

import asyncio
import csv
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import duckdb
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from common.bus import Bus, Outgoing
from common.db.engine import make_sessionmaker
from common.db.models import JobDefinition, JobRun, Task
from common.events import JobDue, RunFinished, TaskStarted
from common.ids import scheduled_run_id
from common.settings import Settings
from common.states import FINAL_RUN_STATUSES, RunStatus, Trigger
from plugins.duckdb_loader import RUN_ID_COLUMN
from tests.faults import plugins
from tests.faults.observe import Recorder
from tests.faults.processes import Cluster

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
RUNS = 20
"""Runs per scenario batch."""
TABLE = "t"
BLOCK_BYTES = 1024
"""The CSV extractor's block: a few batches per file, so an extract has a middle."""


@dataclass(frozen=True)
class JobShape:
    """How the jobs of a batch behave."""

    extract_pause: float = 0.0
    load_pause: float = 0.0
    fail: bool = False
    timeout_seconds: float | None = None
    max_attempts: int = 5
    backoff_seconds: float = 1.0
    backoff_factor: float = 1.0
    block_bytes: int = BLOCK_BYTES
    expect: RunStatus = RunStatus.COMPLETED
    error: str | None = None
    """Text the run's error message must contain."""

    def extractor(self, path: str) -> tuple[str, dict[str, Any]]:
        config: dict[str, Any] = {"path": path, "block_size_bytes": self.block_bytes}
        if not (self.extract_pause or self.fail):
            return "csv", config
        return plugins.EXTRACTOR, {**config, "pause_seconds": self.extract_pause, "fail": self.fail}

    def loader(self, database: str) -> tuple[str, dict[str, Any]]:
        config: dict[str, Any] = {"database": database, "table": TABLE}
        if not self.load_pause:
            return "duckdb", config
        return plugins.LOADER, {**config, "pause_seconds": self.load_pause}


@dataclass(frozen=True)
class Planned:
    run_id: uuid.UUID
    job_id: uuid.UUID
    rows: int
    database: Path
    expect: RunStatus
    error: str | None


@dataclass
class Outcome:
    """One scenario's line in the summary table."""

    scenario: str
    runs: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    wrong_status: list[str] = field(default_factory=list)
    rows_missing: int = 0
    rows_doubled: int = 0
    crashed: list[str] = field(default_factory=list)
    settle_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    checked: bool = True
    """False: the scenario ended (failed) before its invariant check."""

    @property
    def ok(self) -> bool:
        problems = self.lost or self.duplicated or self.wrong_status or self.crashed
        return self.checked and not problems and not self.rows_missing and not self.rows_doubled

    def explain(self) -> str:
        parts = [f"{self.scenario}: invariant broken"]
        for label, items in (
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("wrong status", self.wrong_status),
            ("processes that died on their own", self.crashed),
        ):
            parts.extend(f"  {label}: {item}" for item in items[:10])
        parts.append(f"  rows missing {self.rows_missing}, doubled {self.rows_doubled}")
        parts.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(parts)


COLUMNS = (
    "scenario",
    "invariant",
    "runs",
    "lost",
    "duplicated",
    "wrong status",
    "rows ±",
    "settle s",
    "notes",
)


def table(outcomes: Iterable[Outcome]) -> list[str]:
    """The summary table: one line per scenario, aligned."""
    rows = [COLUMNS]
    for o in outcomes:
        rows.append(
            (
                o.scenario,
                ("holds" if o.ok else "BROKEN") if o.checked else "not checked",
                str(o.runs),
                str(len(o.lost)),
                str(len(o.duplicated)),
                str(len(o.wrong_status)),
                f"-{o.rows_missing}/+{o.rows_doubled}",
                "-" if o.settle_seconds is None else f"{o.settle_seconds:.1f}",
                "; ".join(o.notes),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]


def write_csv(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "score"])
        for i in range(rows):
            writer.writerow([i, f"name-{i}", i * 0.5])


@dataclass
class Rig:
    """A scenario's engine: its settings, processes, recorder, bus and store."""

    settings: Settings
    cluster: Cluster
    recorder: Recorder
    bus: Bus
    db: AsyncEngine
    record: Callable[[Outcome], None]
    notes: list[str] = field(default_factory=list)
    started: float | None = None
    settled: float | None = None
    outcome: Outcome | None = None
    _jobs: int = 0

    @property
    def data_root(self) -> Path:
        return Path(self.settings.data_root)

    async def plan(
        self, count: int = RUNS, shape: JobShape | None = None, ticks: Sequence[datetime] = ()
    ) -> list[Planned]:
        """Make `count` jobs (each its CSV and DuckDB file) and the runs to expect of them.

        With `ticks`, job i is scheduled to fire once, at `ticks[i % len(ticks)]` (UTC), and
        its run id is the scheduler's for that tick; otherwise `trigger` starts the runs.
        """
        shape = shape or JobShape()
        planned: list[Planned] = []
        jobs: list[JobDefinition] = []
        for _ in range(count):
            n = self._jobs
            self._jobs += 1
            rows = 150 + 7 * n
            write_csv(self.data_root / "in" / f"{n}.csv", rows)
            extractor, extractor_config = shape.extractor(f"in/{n}.csv")
            loader, loader_config = shape.loader(f"out/{n}.duckdb")
            tick = ticks[n % len(ticks)] if ticks else None
            job = JobDefinition(
                id=uuid.uuid4(),
                name=f"fault-{n}",
                schedule=f"{tick:%S %M %H %d %m} *" if tick else None,
                timezone="UTC",
                extractor_type=extractor,
                extractor_config=extractor_config,
                loader_type=loader,
                loader_config=loader_config,
                max_attempts=shape.max_attempts,
                retry_backoff_seconds=shape.backoff_seconds,
                retry_backoff_factor=shape.backoff_factor,
                retry_jitter=0.0,
                timeout_seconds=shape.timeout_seconds,
            )
            jobs.append(job)
            planned.append(
                Planned(
                    run_id=scheduled_run_id(job.id, tick) if tick else uuid.uuid4(),
                    job_id=job.id,
                    rows=rows,
                    database=self.data_root / "out" / f"{n}.duckdb",
                    expect=shape.expect,
                    error=shape.error,
                )
            )
        async with self.session() as session, session.begin():
            session.add_all(jobs)
        return planned

    async def trigger(self, runs: Sequence[Planned]) -> None:
        """Publish each run's `JobDue`, as the API's manual trigger does."""
        if self.started is None:
            self.started = time.monotonic()
        await self.bus.publish_many(
            Outgoing(JobDue(job_definition_id=r.job_id, run_id=r.run_id, trigger=Trigger.MANUAL))
            for r in runs
        )

    async def statuses(self) -> dict[uuid.UUID, tuple[RunStatus, str | None]]:
        async with self.db.connect() as conn:
            rows = await conn.execute(select(JobRun.id, JobRun.status, JobRun.error_message))
            return {run_id: (status, error) for run_id, status, error in rows.all()}

    def session(self) -> AsyncSession:
        return make_sessionmaker(self.db)()

    async def tasks(self) -> list[Task]:
        async with self.session() as session:
            return list((await session.execute(select(Task))).scalars())

    def finished(self, runs: Sequence[Planned]) -> int:
        """How many of the runs the recorder saw finish."""
        wanted = {r.run_id for r in runs}
        return len({e.run_id for e in self.recorder.of(RunFinished)} & wanted)

    async def settle(self, runs: Sequence[Planned], timeout: float) -> float | None:
        """Seconds from the first trigger until every run is final in the store; None if
        some are not within `timeout`. Woken by `RunFinished` events; the store decides
        (events may be lost to the recorder while the broker is down)."""
        self.settled = await self._settle(runs, timeout)
        return self.settled

    async def _settle(self, runs: Sequence[Planned], timeout: float) -> float | None:
        start = self.started or time.monotonic()
        deadline = time.monotonic() + timeout
        wanted = {r.run_id for r in runs}
        while True:
            try:
                states = await self.statuses()
            except Exception:  # the store is down: the deadline still runs
                states = {}
            final = {i for i, (status, _) in states.items() if status in FINAL_RUN_STATUSES}
            if wanted <= final:
                return time.monotonic() - start
            if time.monotonic() > deadline:
                return None
            await self.recorder.next_of(RunFinished, 1.0)

    async def verify(
        self,
        scenario: str,
        runs: Sequence[Planned],
        settled: float | None,
        crashed: Sequence[str] = (),
    ) -> Outcome:
        """Check the invariant against the store and the DuckDB files (engine stopped)."""
        outcome = Outcome(scenario, len(runs), settle_seconds=settled, notes=list(self.notes))
        outcome.crashed = list(crashed)
        states = await self.statuses()
        retried = sum(t.attempt_count - 1 for t in await self.tasks() if t.attempt_count > 1)
        starts = Counter((s.task_id, s.attempt) for s in self.recorder.of(TaskStarted))
        repeated = sum(count - 1 for count in starts.values())
        if retried or repeated:
            outcome.notes.append(f"{retried} extra attempts, {repeated} attempts run again")
        planned = {r.run_id for r in runs}
        outcome.duplicated.extend(f"unplanned run {i}" for i in states.keys() - planned)
        for run in runs:
            status, error = states.get(run.run_id, (None, None))
            if status not in FINAL_RUN_STATUSES:
                outcome.lost.append(f"run {run.run_id}: {status or 'never recorded'}")
            elif status != run.expect or (run.error and run.error not in (error or "")):
                outcome.wrong_status.append(f"run {run.run_id}: {status} {error!r}")
            loaded = await asyncio.to_thread(_loaded_rows, run.database)
            want = run.rows if run.expect is RunStatus.COMPLETED else 0
            got = loaded.pop(str(run.run_id), 0)
            strays = sum(loaded.values())
            outcome.rows_missing += max(0, want - got)
            outcome.rows_doubled += max(0, got - want) + strays
            if got > want or strays:
                outcome.duplicated.append(f"run {run.run_id}: {got} rows (+{strays}), want {want}")
            elif got < want and status in FINAL_RUN_STATUSES:
                outcome.lost.append(f"run {run.run_id}: {got} rows loaded, want {want}")
        return outcome

    async def finish(
        self, scenario: str, runs: Sequence[Planned], timeout: float = 60.0
    ) -> Outcome:
        """Settle (unless `settle` did already), stop every process, check the invariant,
        add the scenario's line to the summary, and fail if the invariant does not hold."""
        if self.settled is None:
            await self.settle(runs, timeout)
        crashed = [f"{p.name} exited {p.popen.returncode}" for p in self.cluster.crashed()]
        await self.cluster.stop_all()
        outcome = self.outcome = await self.verify(scenario, runs, self.settled, crashed)
        self.record(outcome)
        assert outcome.ok, "\n".join(
            [outcome.explain(), *self.histories(outcome), self.cluster.logs()]
        )
        return outcome

    def histories(self, outcome: Outcome, limit: int = 5) -> list[str]:
        """The recorded events of the runs the outcome names."""
        names = {
            worker_id: proc.name
            for proc in self.cluster.procs
            for worker_id in self.recorder.worker_ids(proc.pid)
        }
        named = [*outcome.lost, *outcome.wrong_status, *outcome.duplicated]
        run_ids = dict.fromkeys(
            uuid.UUID(m.group(0)) for item in named if (m := _UUID.search(item))
        )
        lines = []
        for run_id in list(run_ids)[:limit]:
            lines.append(f"--- events of run {run_id} ---")
            lines.extend(self.recorder.history(run_id, names, self.started or 0.0))
        return lines

    async def queue_depth(self, queue: str) -> int:
        connection = await aio_pika.connect(self.settings.broker_url)
        try:
            channel = await connection.channel()
            declared = await channel.declare_queue(queue, passive=True)
            return declared.declaration_result.message_count or 0
        finally:
            await connection.close()


def _loaded_rows(database: Path) -> dict[str, int]:
    """Rows per `_orc_run_id` in a DuckDB file's table (empty if there is none)."""
    if not database.exists():
        return {}
    with duckdb.connect(str(database), read_only=True) as con:
        exists = con.execute(
            "select count(*) from information_schema.tables where table_name = ?", [TABLE]
        ).fetchone()
        if not exists or not exists[0]:
            return {}
        rows = con.execute(f"select {RUN_ID_COLUMN}, count(*) from {TABLE} group by 1").fetchall()
    return {str(run_id): int(count) for run_id, count in rows}
