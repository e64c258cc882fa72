"""Run throughput: N two-task runs (`generate` 1 row → `null`), triggered by publishing
`JobDue` to the bus, through one `orc up` process; against Celery's two-task chain on the
same RabbitMQ, measured in the same run.

    python bench/throughput.py --runs 2000 --repeat 3 [--store sqlite|postgres] [--workers 1]

`--workers N` is `orc up --worker-processes N`: the API, scheduler and coordinator in one
process, the workers in N child processes (0: all in the one process).

The engine's and Celery's repetitions alternate (see `run_alternating`).

Prints a table, then one JSON line: runs/s (median), Celery chains/s, ratio, goal ≥ 1.0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402

from common.bus import connect_bus, delete_namespace  # noqa: E402
from common.db.engine import make_engine, make_sessionmaker  # noqa: E402
from common.db.migrate import upgrade  # noqa: E402
from common.db.models import JobDefinition  # noqa: E402
from common.events import JobDue, RunFinished  # noqa: E402
from common.topology import task_queue  # noqa: E402

BROKER = "amqp://guest:guest@127.0.0.1:5672/"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def database(store: str, folder: Path) -> AsyncIterator[str]:
    if store == "sqlite":
        url = f"sqlite+aiosqlite:///{folder / 'orc.db'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    name = f"orc_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.contextmanager
def engine(env: dict[str, str], workers: int, log: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`orc up` (API, scheduler, coordinator here; `workers` worker child processes, or
    with 0 the worker in the same process)."""
    commands = [["up", "--no-demo", "--worker-processes", str(workers)]]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "orc", *cmd],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        for cmd in commands
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


async def wait_for_consumers(ns: str, minimum: int) -> None:
    connection = await aio_pika.connect(BROKER)
    try:
        channel = await connection.channel()
        async with asyncio.timeout(60):
            while True:
                counts = []
                for name in (
                    f"{ns}.coordinator",
                    task_queue(ns, "extract"),
                    task_queue(ns, "load"),
                ):
                    queue = await channel.declare_queue(name, passive=True)
                    counts.append(queue.declaration_result.consumer_count)
                if min(counts) >= minimum:
                    return
                await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def insert_job(url: str) -> uuid.UUID:
    db = make_engine(url)
    try:
        async with make_sessionmaker(db)() as session, session.begin():
            job = JobDefinition(
                name=f"bench-{uuid.uuid4().hex[:6]}",
                extractor_type="generate",
                extractor_config={"rows": 1},
                loader_type="null",
                loader_config={},
                max_attempts=1,
            )
            session.add(job)
        return job.id
    finally:
        await db.dispose()


async def measure_engine(ns: str, job_id: uuid.UUID, runs: int) -> float:
    bus = await connect_bus(BROKER, ns)
    try:
        finished: asyncio.Queue[uuid.UUID] = asyncio.Queue()
        tap = await bus.declare_private_queue([RunFinished.routing_key])

        async def on_finished(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            event = RunFinished.model_validate_json(message.body)
            if event.status != "COMPLETED":
                raise SystemExit(f"run {event.run_id} ended {event.status}: {event.error_message}")
            await finished.put(event.run_id)

        await tap.consume(on_finished, no_ack=True)
        events = [JobDue(job_definition_id=job_id, run_id=uuid.uuid4()) for _ in range(runs)]
        start = time.perf_counter()
        for i in range(0, runs, 500):
            await asyncio.gather(*(bus.publish(e) for e in events[i : i + 500]))
        seen: set[uuid.UUID] = set()
        async with asyncio.timeout(600):
            while len(seen) < runs:
                seen.add(await finished.get())
        return runs / (time.perf_counter() - start)
    finally:
        await bus.close()


def measure_celery(runs: int) -> float:
    import celery_chain
    import redis
    from celery import chain

    queue = f"bench-celery-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "BENCH_CELERY_QUEUE": queue, "BENCH_COUNTER": f"bench:{queue}"}
    celery_chain.app.conf.task_default_queue = queue
    counter = redis.Redis.from_url(celery_chain.REDIS_URL)
    counter.delete(f"bench:{queue}")
    worker = benchlib.start_celery_worker("celery_chain", queue, env)
    try:
        chain(celery_chain.noop.si(), celery_chain.done.si()).apply_async(queue=queue)
        deadline = time.time() + 60
        while int(counter.get(f"bench:{queue}") or 0) < 1:  # warm: worker is consuming
            if time.time() > deadline:
                raise SystemExit("celery worker did not start")
            time.sleep(0.05)
        counter.set(f"bench:{queue}", 0)
        start = time.perf_counter()
        with celery_chain.app.producer_pool.acquire(block=True) as producer:
            for _ in range(runs):
                chain(celery_chain.noop.si(), celery_chain.done.si()).apply_async(
                    queue=queue, producer=producer
                )
        while int(counter.get(f"bench:{queue}") or 0) < runs:
            time.sleep(0.005)
        return runs / (time.perf_counter() - start)
    finally:
        benchlib.stop_process(worker)
        counter.delete(f"bench:{queue}")
        with contextlib.suppress(Exception), celery_chain.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)


async def run_alternating(args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """The engine's and Celery's repetitions in turn (the engine stays up, idle, during
    Celery's): the machine's speed drifts by the minute, and alternating puts both on the
    same minutes instead of the engine on the first half and Celery on the second."""
    ns = f"bench{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        async with database(args.store, folder) as url:
            env = benchlib.engine_env(url, ns, folder, free_port())
            job_id = await insert_job(url)
            await (await connect_bus(BROKER, ns)).close()  # declare the topology first
            try:
                with engine(env, args.workers, folder.parent / f"{ns}.log"):
                    await wait_for_consumers(ns, 1)
                    await measure_engine(ns, job_id, min(200, args.runs))  # warm-up
                    engine_rates: list[float] = []
                    celery_rates: list[float] = []
                    for _ in range(args.repeat):
                        engine_rates.append(await measure_engine(ns, job_id, args.runs))
                        celery_rates.append(await asyncio.to_thread(measure_celery, args.runs))
                    return engine_rates, celery_rates
            finally:
                await delete_namespace(BROKER, ns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes beside `orc up` (0: in it)"
    )
    args = parser.parse_args()

    engine_rates, celery_rates = asyncio.run(run_alternating(args))
    engine_median = statistics.median(engine_rates)
    celery_median = statistics.median(celery_rates)
    print(f"{'':24}{'median':>10}  all")
    print(f"{'engine runs/s':24}{engine_median:10.1f}  {[round(r, 1) for r in engine_rates]}")
    print(f"{'celery chains/s':24}{celery_median:10.1f}  {[round(r, 1) for r in celery_rates]}")
    ratio = engine_median / celery_median
    print(
        json.dumps(
            {
                "benchmark": "run_throughput",
                "store": args.store,
                "workers": args.workers,
                "runs": args.runs,
                "engine_runs_per_s": round(engine_median, 1),
                "celery_chains_per_s": round(celery_median, 1),
                "ratio": round(ratio, 2),
                "goal": 1.0,
                "met": ratio >= 1.0,
            }
        )
    )


if __name__ == "__main__":
    main()
