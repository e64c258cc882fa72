"""Where the machine's CPU goes in the throughput benchmark, process by process, for the
engine and for Celery's chain, and whether a run costs more as the history grows.

    python bench/cpu_per_run.py [--store sqlite|postgres] [--bursts 4] [--runs 3000]

Both sides saturate the two cores in `throughput.py`, so CPU per run is what decides who
is faster. What is measured, in one run of this script:

- **engine**: one `orc up --no-demo` (its worker in a child process) on a fresh store;
  `--bursts` bursts of `--runs` runs (`generate` 1 row → `null`, triggered by `JobDue`
  as in `throughput.py`), one after the other on the same, growing store. For each
  burst: runs/s, and the CPU time (user + system, from `/proc`) each process spent per
  run: `orc up` (API, scheduler, coordinator), its worker, RabbitMQ, the PostgreSQL
  server (all its processes; `--store postgres`) and this driver.
- **baseline, Celery**: `throughput.py`'s Celery app (two no-op tasks chained, acks
  late, one prefork worker with a child per core), `--bursts` bursts of `--runs` chains:
  chains/s and CPU per chain of the Celery worker (main process and children),
  RabbitMQ, Redis (the done counter) and this driver (`apply_async`).

Figures: each side's total CPU per run (median over bursts), the ratio engine / Celery
(below 1: the engine costs the machine less per run), and the engine's last burst's
runs/s over its first's (`history_ratio`: 1.0 means a run costs the same with 3 times the
history). Prints a table, then one JSON line. Needs what `throughput.py` needs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
import throughput  # noqa: E402

from common.bus import connect_bus, delete_namespace  # noqa: E402

Burst = dict[str, float]
"""A burst's figures: `rate` (per second) and each process's CPU ms per run."""


def cpu_or_none(pid: int) -> float | None:
    """`benchlib.cpu_seconds`, or None once the process is gone."""
    try:
        return benchlib.cpu_seconds(pid)
    except OSError:
        return None


def pids_of(*pgrep: str) -> list[int]:
    found = subprocess.run(["pgrep", *pgrep], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


Snapshot = dict[str, dict[int, float | None]]


def cpu_of(groups: dict[str, list[int]]) -> Snapshot:
    return {name: {pid: cpu_or_none(pid) for pid in pids} for name, pids in groups.items()}


def per_run(before: Snapshot, after: Snapshot, runs: int) -> Burst:
    """CPU ms per run of each group, over the processes alive at both ends (a database
    backend may come or go)."""
    burst: Burst = {}
    for name, pids in before.items():
        spent = 0.0
        for pid, start in pids.items():
            end = after[name][pid]
            if start is not None and end is not None:
                spent += end - start
        burst[name] = 1000 * spent / runs
    return burst


async def measure_engine(store: str, bursts: int, runs: int) -> list[Burst]:
    ns = f"benchcpu{uuid.uuid4().hex[:8]}"
    figures: list[Burst] = []
    with tempfile.TemporaryDirectory(prefix="orc-bench-cpu-") as tmp:
        folder = Path(tmp)
        async with throughput.database(store, folder) as url:
            env = benchlib.engine_env(url, ns, folder, throughput.free_port())
            job_id = await throughput.insert_job(url)
            await (await connect_bus(throughput.BROKER, ns)).close()
            try:
                with throughput.engine(env, 1, folder / "engine.log") as procs:
                    await throughput.wait_for_consumers(ns, 1)
                    await throughput.measure_engine(ns, job_id, 300)  # warm-up
                    up = procs[0].pid
                    groups = {
                        "orc up": [up],
                        "worker": pids_of("-P", str(up)),
                        "rabbitmq": pids_of("-f", "beam.smp"),
                        "driver": [os.getpid()],
                    }
                    if store == "postgres":
                        groups["postgresql"] = pids_of("-u", "postgres")
                    for _ in range(bursts):
                        before = cpu_of(groups)
                        rate = await throughput.measure_engine(ns, job_id, runs)
                        figures.append({"rate": rate, **per_run(before, cpu_of(groups), runs)})
            finally:
                await delete_namespace(throughput.BROKER, ns)
    return figures


def measure_celery(bursts: int, runs: int) -> list[Burst]:
    import celery_chain
    import redis
    from celery import chain

    queue = f"bench-celery-cpu-{uuid.uuid4().hex[:6]}"
    key = f"bench:{queue}"
    env = {**os.environ, "BENCH_CELERY_QUEUE": queue, "BENCH_COUNTER": key}
    celery_chain.app.conf.task_default_queue = queue
    counter = redis.Redis.from_url(celery_chain.REDIS_URL)
    worker = benchlib.start_celery_worker("celery_chain", queue, env)
    figures: list[Burst] = []

    def wait_for(count: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        while int(counter.get(key) or 0) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"Celery finished fewer than {count} chains in {timeout} s")
            time.sleep(0.005)

    def send(count: int) -> None:
        with celery_chain.app.producer_pool.acquire(block=True) as producer:
            for _ in range(count):
                chain(celery_chain.noop.si(), celery_chain.done.si()).apply_async(
                    queue=queue, producer=producer
                )

    try:
        counter.set(key, 0)
        send(300)  # warm-up: the worker and its children are up
        wait_for(300, 60)
        groups = {
            "celery worker": [worker.pid, *pids_of("-P", str(worker.pid))],
            "rabbitmq": pids_of("-f", "beam.smp"),
            "redis": pids_of("-f", "redis-server"),
            "driver": [os.getpid()],
        }
        for _ in range(bursts):
            counter.set(key, 0)
            before = cpu_of(groups)
            started = time.perf_counter()
            send(runs)
            wait_for(runs)
            rate = runs / (time.perf_counter() - started)
            figures.append({"rate": rate, **per_run(before, cpu_of(groups), runs)})
    finally:
        benchlib.stop_process(worker)
        counter.delete(key)
        with celery_chain.app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
    return figures


def total(burst: Burst) -> float:
    return sum(v for k, v in burst.items() if k != "rate")


def print_table(title: str, figures: list[Burst]) -> None:
    names = [k for k in figures[0] if k != "rate"]
    print(f"{title:16}" + "".join(f"{n:>14}" for n in ["per s", *names, "total ms"]))
    for i, burst in enumerate(figures, 1):
        cells = [burst["rate"], *(burst[n] for n in names), total(burst)]
        print(f"{'burst ' + str(i):16}" + "".join(f"{c:14.3f}" for c in cells))


def median_of(figures: list[Burst], pick: Callable[[Burst], float]) -> float:
    return statistics.median(pick(b) for b in figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--bursts", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3000)
    args = parser.parse_args()

    engine = asyncio.run(measure_engine(args.store, args.bursts, args.runs))
    celery = measure_celery(args.bursts, args.runs)
    print_table(f"engine ({args.store})", engine)
    print_table("celery chain", celery)
    engine_ms, celery_ms = median_of(engine, total), median_of(celery, total)
    print(
        json.dumps(
            {
                "benchmark": "cpu_per_run",
                "store": args.store,
                "bursts": args.bursts,
                "runs": args.runs,
                "engine_cpu_ms_per_run": round(engine_ms, 3),
                "celery_cpu_ms_per_chain": round(celery_ms, 3),
                "ratio": round(engine_ms / celery_ms, 2),
                "engine_by_process_ms": {
                    k: round(median_of(engine, lambda b, k=k: b[k]), 3)
                    for k in engine[0]
                    if k != "rate"
                },
                "celery_by_process_ms": {
                    k: round(median_of(celery, lambda b, k=k: b[k]), 3)
                    for k in celery[0]
                    if k != "rate"
                },
                "engine_runs_per_s": [round(b["rate"], 1) for b in engine],
                "celery_chains_per_s": [round(b["rate"], 1) for b in celery],
                "history_ratio": round(engine[-1]["rate"] / engine[0]["rate"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
