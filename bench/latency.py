"""Latency at a low rate: one run at a time, trigger → `RunFinished` COMPLETED.

    python bench/latency.py [--runs 200] [--warmup 10] [--store sqlite|postgres]

What is measured, in one run of this script:

(a) orc via the bus: one `orc up --no-demo` with its defaults (API, scheduler and
    coordinator in one process, its default worker processes: one on 2 cores) with a
    fresh state store (a SQLite file, or a temporary PostgreSQL database with `--store
    postgres`) and a `generate` {"rows": 1} → `null` job. `--runs` times,
    one after the other: publish `JobDue` (fresh run id, publisher confirm awaited) and
    wait for its `RunFinished` on a private queue bound to `run.finished`. The figure is
    the time from just before the publish to the arrival of `RunFinished` in this process.
(b) orc via the API: the same, triggered by `POST /jobs/{id}/run` (bearer token, one
    keep-alive httpx connection), measured from just before the request is sent.
(c) baseline, Celery: the two-task chain `noop.si() | done_push.si(key)` (`celery_chain`'s
    app: acks_late, no result backend) on the same RabbitMQ, one prefork worker process
    with as many children as CPUs, one chain at a time. The last task RPUSHes onto a Redis
    list and the driver BLPOPs it, so completion is seen without polling. Measured from
    just before `apply_async` to BLPOP's return.
(d) baseline, the broker alone: aio-pika publishes a persistent message with publisher
    confirms to a queue, and a consumer (another connection) receives and acks it; the
    figure is publish → consumer callback. On a durable quorum queue (what the engine's
    queues are) and on a classic exclusive queue.

Each path first runs `--warmup` rounds that are not counted. Reported: p50 and p99 of
each path (linear interpolation). Goal: p50 ≤ 15 ms via the bus and ≤ 25 ms via the API.
The last line printed is one JSON object:
  {"benchmark": "latency", "bus_p50_ms", "bus_p99_ms", "api_p50_ms", "api_p99_ms",
   "celery_p50_ms", "celery_p99_ms", "aiopika_p50_ms", "aiopika_p99_ms",
   "aiopika_classic_p50_ms", "aiopika_classic_p99_ms", "ratio_bus_vs_celery",
   "ratio_api_vs_celery", "goal_bus_p50_ms", "goal_api_p50_ms", "met", ...}
(ratios are p50 over p50: below 1 means orc answers sooner than Celery.)

Needs RabbitMQ (amqp://guest:guest@127.0.0.1:5672/), Redis (for Celery's baseline) and,
with `--store postgres`, PostgreSQL at 127.0.0.1:5432 (user postgres). The namespace's
queues, the temporary folder and database, Celery's queue and Redis key are removed at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import benchlib  # noqa: E402
import throughput  # noqa: E402
from benchlib import FinishedTap, ms, percentile  # noqa: E402

from common.bus import Bus, connect_bus, delete_namespace  # noqa: E402
from common.events import JobDue  # noqa: E402
from common.states import RunStatus, Trigger  # noqa: E402

BROKER = throughput.BROKER
GOAL_BUS_P50_MS = 15.0
GOAL_API_P50_MS = 25.0
RUN_TIMEOUT_S = 30.0


class RunNotCompleted(RuntimeError):
    """A measured run ended in another status than COMPLETED."""


async def via_bus(bus: Bus, tap: FinishedTap, job_id: uuid.UUID, rounds: int) -> list[float]:
    latencies = []
    for _ in range(rounds):
        run_id = uuid.uuid4()
        started = time.perf_counter()
        await bus.publish(JobDue(job_definition_id=job_id, run_id=run_id, trigger=Trigger.MANUAL))
        arrived, event = await tap.wait(run_id, RUN_TIMEOUT_S)
        if event.status is not RunStatus.COMPLETED:
            raise RunNotCompleted(f"run {run_id} ended {event.status}: {event.error_message}")
        latencies.append(arrived - started)
    return latencies


async def via_api(
    client: httpx.AsyncClient, tap: FinishedTap, job_id: uuid.UUID, rounds: int
) -> list[float]:
    latencies = []
    for _ in range(rounds):
        started = time.perf_counter()
        response = await client.post(f"/jobs/{job_id}/run")
        if response.status_code != 202:
            raise RunNotCompleted(
                f"POST /jobs/{job_id}/run: {response.status_code} {response.text}"
            )
        run_id = uuid.UUID(response.json()["id"])
        arrived, event = await tap.wait(run_id, RUN_TIMEOUT_S)
        if event.status is not RunStatus.COMPLETED:
            raise RunNotCompleted(f"run {run_id} ended {event.status}: {event.error_message}")
        latencies.append(arrived - started)
    return latencies


async def measure_orc(args: argparse.Namespace) -> dict[str, list[float]]:
    """Bus and API latencies (seconds, warm-up dropped) through one `orc up` process."""
    ns = f"benchlat{uuid.uuid4().hex[:8]}"
    port = throughput.free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="orc-bench-latency-") as tmp:
        folder = Path(tmp)
        log = folder / "engine.log"
        try:
            async with throughput.database(args.store, folder) as url:
                job_id = await throughput.insert_job(url)
                env = benchlib.engine_env(url, ns, folder, port)
                await (await connect_bus(BROKER, ns)).close()  # declare the topology first
                with benchlib.orc_up(env, log):
                    await throughput.wait_for_consumers(ns, 1)
                    await benchlib.wait_for_api(base_url)
                    bus = await connect_bus(BROKER, ns)
                    try:
                        tap = FinishedTap()
                        await tap.start(bus)
                        await via_bus(bus, tap, job_id, args.warmup)
                        bus_latencies = await via_bus(bus, tap, job_id, args.runs)
                        headers = {"Authorization": f"Bearer {benchlib.ADMIN_TOKEN}"}
                        async with httpx.AsyncClient(base_url=base_url, headers=headers) as client:
                            await via_api(client, tap, job_id, args.warmup)
                            api_latencies = await via_api(client, tap, job_id, args.runs)
                    finally:
                        await bus.close()
        except BaseException:
            tail = benchlib.log_tail(log)
            if tail:
                print(f"--- engine log (last lines) ---\n{tail}\n---", file=sys.stderr)
            raise
        finally:
            await delete_namespace(BROKER, ns)
    return {"bus": bus_latencies, "api": api_latencies}


def measure_celery(warmup: int, runs: int) -> list[float]:
    """Celery's two-task chain, one at a time; seconds from `apply_async` to BLPOP."""
    import redis
    from celery import chain

    sys.path.insert(0, str(ROOT / "bench"))
    import celery_chain
    import celery_latency

    queue = f"bench-celery-lat-{uuid.uuid4().hex[:6]}"
    key = f"bench:{queue}:done"
    env = {**os.environ, "BENCH_CELERY_QUEUE": queue}
    celery_latency.app.conf.task_default_queue = queue
    client = redis.Redis.from_url(celery_chain.REDIS_URL)
    client.delete(key)
    worker = benchlib.start_celery_worker("celery_latency", queue, env)
    latencies: list[float] = []
    try:
        with celery_latency.app.producer_pool.acquire(block=True) as producer:

            def one(timeout: float) -> float:
                started = time.perf_counter()
                chain(celery_latency.noop.si(), celery_latency.done_push.si(key)).apply_async(
                    queue=queue, producer=producer
                )
                if client.blpop([key], timeout=timeout) is None:
                    raise RuntimeError(f"a Celery chain did not finish within {timeout} s")
                return time.perf_counter() - started

            one(60)  # the worker is up and consuming
            for _ in range(warmup):
                one(RUN_TIMEOUT_S)
            latencies = [one(RUN_TIMEOUT_S) for _ in range(runs)]
    finally:
        benchlib.stop_process(worker)
        client.delete(key)
        with (
            contextlib.suppress(Exception),
            celery_latency.app.connection_for_write() as conn,
        ):
            conn.default_channel.queue_delete(queue)
    return latencies


async def measure_aiopika(warmup: int, runs: int, quorum: bool) -> list[float]:
    """Publish (persistent, confirmed) → consumer callback on another connection."""
    publisher = await aio_pika.connect(BROKER)
    consumer = await aio_pika.connect(BROKER)
    queue_name = f"bench-roundtrip-{uuid.uuid4().hex[:8]}"
    try:
        channel = await publisher.channel(publisher_confirms=True)
        receiving = await consumer.channel()
        await receiving.set_qos(prefetch_count=10)
        if quorum:
            queue = await receiving.declare_queue(
                queue_name, durable=True, arguments={"x-queue-type": "quorum"}
            )
        else:
            queue = await receiving.declare_queue(exclusive=True, auto_delete=True)
            queue_name = queue.name
        waiters: dict[str, asyncio.Future[float]] = {}

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            at = time.perf_counter()
            await message.ack()
            waiter = waiters.pop(message.message_id or "", None)
            if waiter is not None and not waiter.done():
                waiter.set_result(at)

        await queue.consume(on_message)
        loop = asyncio.get_running_loop()
        latencies = []
        for i in range(warmup + runs):
            message_id = uuid.uuid4().hex
            waiter: asyncio.Future[float] = loop.create_future()
            waiters[message_id] = waiter
            body = JobDue(job_definition_id=uuid.uuid4()).model_dump_json().encode()
            started = time.perf_counter()
            await channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    message_id=message_id,
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue_name,
            )
            async with asyncio.timeout(RUN_TIMEOUT_S):
                arrived = await waiter
            if i >= warmup:
                latencies.append(arrived - started)
        return latencies
    finally:
        await consumer.close()
        if quorum:
            with contextlib.suppress(Exception):
                cleanup = await publisher.channel()
                await cleanup.queue_delete(queue_name)
        await publisher.close()


def summarize(latencies: list[float] | None) -> tuple[float | None, float | None, float | None]:
    if not latencies:
        return None, None, None
    return (
        ms(percentile(latencies, 50)),
        ms(percentile(latencies, 99)),
        ms(max(latencies)),
    )


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=200, help="measured runs per path")
    parser.add_argument("--warmup", type=int, default=10, help="uncounted runs per path first")
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")

    errors: list[str] = []
    figures: dict[str, list[float] | None] = {"bus": None, "api": None}
    try:
        figures.update(asyncio.run(measure_orc(args)))
    except Exception as exc:
        traceback.print_exc()
        errors.append(f"orc: {type(exc).__name__}: {exc}")
    try:
        figures["celery"] = measure_celery(args.warmup, args.runs)
    except Exception as exc:
        traceback.print_exc()
        errors.append(f"celery: {type(exc).__name__}: {exc}")
    for name, quorum in (("aiopika", True), ("aiopika_classic", False)):
        try:
            figures[name] = asyncio.run(measure_aiopika(args.warmup, args.runs, quorum))
        except Exception as exc:
            traceback.print_exc()
            errors.append(f"{name}: {type(exc).__name__}: {exc}")

    labels = {
        "bus": "orc, JobDue on the bus",
        "api": "orc, POST /jobs/{id}/run",
        "celery": "celery chain of 2 tasks",
        "aiopika": "aio-pika round trip, quorum",
        "aiopika_classic": "aio-pika round trip, classic",
    }
    print(
        f"latency, trigger → done, one at a time: {args.runs} runs per path "
        f"(+{args.warmup} warm-up), state store {args.store}, {os.cpu_count()} CPUs"
    )
    print(f"{'path':<32}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    summary: dict[str, Any] = {"benchmark": "latency", "store": args.store, "runs": args.runs}
    for name, label in labels.items():
        p50, p99, top = summarize(figures.get(name))
        summary[f"{name}_p50_ms"] = p50
        summary[f"{name}_p99_ms"] = p99

        def cell(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f}"

        print(f"{label:<32}{cell(p50):>10}{cell(p99):>10}{cell(top):>10}")
    bus_p50, api_p50 = summary["bus_p50_ms"], summary["api_p50_ms"]
    summary["ratio_bus_vs_celery"] = ratio(bus_p50, summary["celery_p50_ms"])
    summary["ratio_api_vs_celery"] = ratio(api_p50, summary["celery_p50_ms"])
    summary["goal_bus_p50_ms"] = GOAL_BUS_P50_MS
    summary["goal_api_p50_ms"] = GOAL_API_P50_MS
    summary["met"] = bool(
        bus_p50 is not None
        and api_p50 is not None
        and bus_p50 <= GOAL_BUS_P50_MS
        and api_p50 <= GOAL_API_P50_MS
    )
    if errors:
        summary["error"] = "; ".join(errors)
    print(
        f"goal: p50 ≤ {GOAL_BUS_P50_MS:g} ms via the bus, ≤ {GOAL_API_P50_MS:g} ms via the API: "
        f"{'met' if summary['met'] else 'not met'}; bus/celery p50 ratio "
        f"{summary['ratio_bus_vs_celery']}"
    )
    print(json.dumps(summary))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
