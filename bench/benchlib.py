"""Helpers shared by `latency.py`, `data_plane.py` and `scheduler_scale.py`.

Not a benchmark itself: the environment of an `orc up` process under test, a tap that
records when each `RunFinished` arrives, readiness of the REST API, percentiles, and the
tail of an engine log for error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
from aio_pika.abc import AbstractIncomingMessage
from cryptography.fernet import Fernet

from common.bus import Bus
from common.events import RunFinished

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ADMIN_TOKEN = "bench-token"


def engine_env(database_url: str, namespace: str, folder: Path, api_port: int) -> dict[str, str]:
    """`ORC_*` variables for an engine process whose every file lives in `folder`.

    The secret key and the token file are set too, so nothing is written to `.orc/` in
    the current directory.
    """
    (folder / "data").mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "ORC_DATABASE_URL": database_url,
        "ORC_NAMESPACE": namespace,
        "ORC_STAGING_URL": str(folder / "staging"),
        "ORC_DATA_ROOT": str(folder / "data"),
        "ORC_API_HOST": "127.0.0.1",
        "ORC_API_PORT": str(api_port),
        "ORC_ADMIN_TOKEN": ADMIN_TOKEN,
        "ORC_TOKEN_FILE": str(folder / "token"),
        "ORC_SECRET_KEY": Fernet.generate_key().decode(),
        "ORC_LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def orc_up(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m orc up --no-demo` with its defaults (API, scheduler, coordinator, and
    its default workers), output to `log`; SIGTERM on exit (it stops its own children),
    SIGKILL if it is still up 30 s later."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "orc", "up", "--no-demo"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_for_api(base_url: str, timeout: float = 60.0) -> None:
    """Until `GET /health` answers 200."""
    async with httpx.AsyncClient(base_url=base_url) as client, asyncio.timeout(timeout):
        while True:
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)


class FinishedTap:
    """Records when each `RunFinished` arrives (`time.perf_counter()`), on a private queue
    bound to `run.finished`; a run that finishes before anyone waits for it is kept."""

    def __init__(self) -> None:
        self.arrived: dict[uuid.UUID, tuple[float, RunFinished]] = {}
        self._waiters: dict[uuid.UUID, asyncio.Future[None]] = {}

    async def start(self, bus: Bus) -> None:
        queue = await bus.declare_private_queue([RunFinished.routing_key])
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        at = time.perf_counter()
        event = RunFinished.model_validate_json(message.body)
        self.arrived[event.run_id] = (at, event)
        waiter = self._waiters.pop(event.run_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, run_id: uuid.UUID, timeout: float) -> tuple[float, RunFinished]:
        """The arrival time and the event of `run_id`'s `RunFinished` (popped)."""
        if run_id not in self.arrived:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters[run_id] = waiter
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            finally:
                self._waiters.pop(run_id, None)
        return self.arrived.pop(run_id)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds rounded to 0.01 (None and NaN stay None)."""
    if seconds is None or math.isnan(seconds):
        return None
    return round(seconds * 1000, 2)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (OSError once it is gone)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start_celery_worker(
    app_module: str, queue: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """A Celery worker of a baseline app in `bench/` (prefork, one process per core)."""
    return subprocess.Popen(
        [
            sys.executable,
            *("-m", "celery", "-A", app_module, "worker", "-Q", queue),
            *("--concurrency", str(os.cpu_count() or 2), "--loglevel", "WARNING"),
            *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        ],
        cwd=Path(__file__).resolve().parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_process(process: subprocess.Popen[bytes], grace_seconds: float = 30.0) -> None:
    process.terminate()
    try:
        process.wait(grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
