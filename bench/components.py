"""CPU per run of each engine component alone, against a bare aio-pika relay measured in
the same run: where the throughput benchmark's CPU goes, one process at a time.

    python bench/components.py [--runs 3000] [--repeat 2] [--store sqlite|postgres]

- **worker**: N extract dispatches (`generate` 1 row, its `null` load riding along) are
  queued, then one `orc worker` (its default concurrency, 8) drains them; figure: the
  worker process's CPU (user + system) per task while it does.
- **coordinator**: `orc coordinator` alone, with N `JobDue` published; a bare aio-pika
  responder in this process answers each dispatch at once with a `TaskSucceeded` that
  carries its load's result. Figure: the coordinator's CPU per run (JobDue → COMPLETED,
  two messages in, a dispatch, the state notices and `RunFinished` out, two
  transactions' share).
- **baseline, bare relay**: a child process with nothing but aio-pika consumes N queued
  messages of a dispatch's size (prefetch 4), publishes a reply of an outcome's size for
  each with publisher confirms, and acks after the confirm: the least any Python
  consumer on aio-pika pays per message it answers.

Ratios: worker CPU per task / relay CPU per message (the worker answers one message per
task) and coordinator CPU per run / twice the relay's (it answers two per run). The
machine's CPU, not the wall clock, is what the throughput benchmark runs out of, so CPU
per run is what these track. Prints a table, then one JSON line.
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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

from benchlib import cpu_seconds, engine_env, stop_process  # noqa: E402
from throughput import BROKER, database, free_port, insert_job  # noqa: E402

from common.bus import Bus, connect_bus, delete_namespace  # noqa: E402
from common.events import (  # noqa: E402
    EVENTS_BY_ROUTING_KEY,
    JobDue,
    LoadOrder,
    RunFinished,
    TaskDispatched,
    TaskFailed,
    TaskOutcomes,
    TaskSucceeded,
    unfolded,
)
from common.states import TaskType  # noqa: E402
from common.topology import task_queue, task_routing_key  # noqa: E402


def spawn(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], env=env)


def dispatch(job_id: uuid.UUID) -> TaskDispatched:
    return TaskDispatched(
        task_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        job_definition_id=job_id,
        task_type=TaskType.EXTRACT,
        attempt=1,
        plugin="generate",
        config={"rows": 1},
        then=LoadOrder(task_id=uuid.uuid4(), plugin="null", config={}),
    )


async def queue_depth(channel: aio_pika.abc.AbstractChannel, name: str) -> tuple[int, int]:
    queue = await channel.declare_queue(name, passive=True)
    result = queue.declaration_result
    return result.message_count or 0, result.consumer_count or 0


OUTCOME_KEYS = (TaskSucceeded.routing_key, TaskFailed.routing_key, TaskOutcomes.routing_key)


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 600) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.02)


async def cpu_ms_per_item(pid: int, done: Callable[[], Awaitable[bool]], items: int) -> float:
    """CPU milliseconds per item that process `pid` spends from now until `done()`."""
    before = cpu_seconds(pid)
    await wait_until(done)
    return 1000 * (cpu_seconds(pid) - before) / items


async def measure_worker(runs: int) -> float:
    """CPU ms per task of `orc worker` draining `runs` queued dispatches."""
    ns = f"bcw{uuid.uuid4().hex[:8]}"
    bus = await connect_bus(BROKER, ns)
    connection = await aio_pika.connect(BROKER)
    try:
        job_id = uuid.uuid4()
        key = task_routing_key(TaskType.EXTRACT)
        for start in range(0, runs, 500):
            batch = [dispatch(job_id) for _ in range(min(500, runs - start))]
            await asyncio.gather(*(bus.publish(event, routing_key=key) for event in batch))
        channel = await connection.channel()
        # Outcomes are counted as they come: a busy worker sends several to a message.
        outcomes = [0]
        tap = await bus.declare_private_queue(OUTCOME_KEYS)

        async def count(message: AbstractIncomingMessage) -> None:
            model = EVENTS_BY_ROUTING_KEY[message.routing_key or ""]
            outcomes[0] += len(unfolded(model.model_validate_json(message.body)))

        await tap.consume(count, no_ack=True)
        with tempfile.TemporaryDirectory() as folder:
            env = engine_env(
                f"sqlite+aiosqlite:///{folder}/unused.db", ns, Path(folder), free_port()
            )
            worker = spawn(["-m", "orc", "worker"], env)
            try:

                async def consuming() -> bool:
                    return (await queue_depth(channel, task_queue(ns, "extract")))[1] > 0

                async def answered() -> bool:
                    return outcomes[0] >= runs

                await wait_until(consuming, 60)
                return await cpu_ms_per_item(worker.pid, answered, runs)
            finally:
                stop_process(worker)
    finally:
        await connection.close()
        await bus.close()
        await delete_namespace(BROKER, ns)


async def respond_as_worker(bus: Bus) -> aio_pika.abc.AbstractConnection:
    """Answer every extract dispatch at once with its success and its load's."""
    connection = await aio_pika.connect(BROKER)
    channel = await connection.channel(publisher_confirms=False)
    await channel.set_qos(prefetch_count=300)
    exchange = await channel.get_exchange(bus.topology.exchange)
    queue = await channel.get_queue(task_queue(bus.topology.namespace, "extract"))
    now = datetime.now(UTC).isoformat()

    async def answer(message: AbstractIncomingMessage) -> None:
        task = json.loads(message.body)
        outcome = {
            "event_id": str(uuid.uuid4()),
            "task_id": task["task_id"],
            "run_id": task["run_id"],
            "attempt": task["attempt"],
            "rows": 1,
            "started_at": now,
            "worker_id": "bench",
            "load": {
                "task_id": task["then"]["task_id"],
                "started_at": now,
                "worker_id": "bench",
                "rows": 1,
            },
        }
        body = json.dumps(outcome).encode()
        await exchange.publish(
            aio_pika.Message(body, content_type="application/json", delivery_mode=2),
            routing_key="task.succeeded",
        )
        await message.ack()

    await queue.consume(answer)
    return connection


async def trigger_and_wait(bus: Bus, job_id: uuid.UUID, runs: int) -> None:
    finished: asyncio.Queue[None] = asyncio.Queue()
    tap = await bus.declare_private_queue([RunFinished.routing_key])

    async def on_finished(message: AbstractIncomingMessage) -> None:
        event = RunFinished.model_validate_json(message.body)
        if event.status != "COMPLETED":
            raise SystemExit(f"run {event.run_id} ended {event.status}: {event.error_message}")
        finished.put_nowait(None)

    tag = await tap.consume(on_finished, no_ack=True)
    events = [JobDue(job_definition_id=job_id, run_id=uuid.uuid4()) for _ in range(runs)]
    for start in range(0, runs, 500):
        await asyncio.gather(*(bus.publish(event) for event in events[start : start + 500]))
    async with asyncio.timeout(600):
        for _ in range(runs):
            await finished.get()
    await tap.cancel(tag)


async def measure_coordinator(runs: int, store: str) -> float:
    """CPU ms per run of `orc coordinator` alone, the worker answered by a stand-in."""
    ns = f"bcc{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as folder:
        async with database(store, Path(folder)) as url:
            job_id = await insert_job(url)
            bus = await connect_bus(BROKER, ns)
            env = engine_env(url, ns, Path(folder), free_port())
            coordinator = spawn(["-m", "orc", "coordinator"], env)
            responder = await respond_as_worker(bus)
            try:
                await trigger_and_wait(bus, job_id, min(200, runs))  # warm-up
                before = cpu_seconds(coordinator.pid)
                await trigger_and_wait(bus, job_id, runs)
                return 1000 * (cpu_seconds(coordinator.pid) - before) / runs
            finally:
                stop_process(coordinator)
                await responder.close()
                await bus.close()
                await delete_namespace(BROKER, ns)


async def relay(source: str, replies: str, ready: str) -> None:
    """The bare relay, in its own process: consume, publish a reply, await its confirm,
    ack; until `source` is drained (the parent counts `replies`)."""
    connection = await aio_pika.connect(BROKER)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=4)
    queue = await channel.get_queue(source)
    reply = b"x" * 420  # the size of a TaskSucceeded with its load's result

    async def answer(message: AbstractIncomingMessage) -> None:
        await channel.default_exchange.publish(
            aio_pika.Message(reply, content_type="application/json", delivery_mode=2),
            routing_key=replies,
        )
        await message.ack()

    await queue.consume(answer)
    Path(ready).touch()
    await asyncio.Future()


async def measure_relay(runs: int) -> float:
    """CPU ms per message of the bare relay."""
    name = f"bcr{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(BROKER)
    try:
        channel = await connection.channel(publisher_confirms=True)
        source = await channel.declare_queue(f"{name}.in", durable=True)
        replies = await channel.declare_queue(f"{name}.out", durable=True)
        body = dispatch(uuid.uuid4()).model_dump_json().encode()
        for start in range(0, runs, 500):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(body, delivery_mode=2), routing_key=source.name
                    )
                    for _ in range(min(500, runs - start))
                )
            )
        with tempfile.TemporaryDirectory() as folder:
            ready = f"{folder}/ready"
            child = spawn([__file__, "--relay", source.name, replies.name, ready])
            try:
                async with asyncio.timeout(60):
                    while not os.path.exists(ready):
                        await asyncio.sleep(0.01)

                async def answered() -> bool:
                    return (await queue_depth(channel, replies.name))[0] >= runs

                return await cpu_ms_per_item(child.pid, answered, runs)
            finally:
                stop_process(child)
    finally:
        channel = await connection.channel()
        await channel.queue_delete(f"{name}.in")
        await channel.queue_delete(f"{name}.out")
        await connection.close()


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"worker": [], "coordinator": [], "relay": []}
    for _ in range(args.repeat):
        results["relay"].append(await measure_relay(args.runs))
        results["worker"].append(await measure_worker(args.runs))
        results["coordinator"].append(await measure_coordinator(args.runs, args.store))
    return results


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--relay":
        asyncio.run(relay(*sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()

    started = time.perf_counter()
    results = asyncio.run(measure(args))
    median = {name: statistics.median(values) for name, values in results.items()}
    print(f"{'CPU ms':28}{'median':>8}  all")
    for name, label in (
        ("worker", "worker, per task"),
        ("coordinator", "coordinator, per run"),
        ("relay", "bare aio-pika relay, per msg"),
    ):
        print(f"{label:28}{median[name]:8.3f}  {[round(v, 3) for v in results[name]]}")
    print(
        json.dumps(
            {
                "benchmark": "components",
                "store": args.store,
                "runs": args.runs,
                "worker_cpu_ms_per_task": round(median["worker"], 3),
                "coordinator_cpu_ms_per_run": round(median["coordinator"], 3),
                "relay_cpu_ms_per_message": round(median["relay"], 3),
                "worker_vs_relay": round(median["worker"] / median["relay"], 2),
                "coordinator_vs_2_relays": round(median["coordinator"] / (2 * median["relay"]), 2),
                "elapsed_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
