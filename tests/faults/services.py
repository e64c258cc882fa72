"""Stopping and reconfiguring the real RabbitMQ and PostgreSQL, always restoring them.

These act on the whole node, not on a namespace or a database: every test that runs at the
same time is disrupted too. Scenarios using them are marked `disruptive`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from tests.conftest import PG_ADMIN_DSN

READY_SECONDS = 90.0
DEFAULT_CONSUMER_TIMEOUT_MS = 1_800_000


def require_tools(*names: str) -> None:
    """Skip on a laptop without the service's tools (a broker in Docker); fail on CI."""
    missing = [n for n in names if shutil.which(n) is None]
    if not missing:
        return
    message = f"needs {', '.join(missing)} on this machine to control the service"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


async def run(*argv: str, timeout: float = 120.0) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    text = out.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}: {text}")
    return text


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            if await check():
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {READY_SECONDS:g}s")
        await asyncio.sleep(0.2)


async def _broker_port_open() -> bool:
    def connect() -> bool:
        with socket.create_connection(("127.0.0.1", 5672), 2):
            return True

    return await asyncio.to_thread(connect)


async def _postgres_accepts() -> bool:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
    try:
        return bool(await conn.fetchval("select 1"))
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def rabbitmq_stopped() -> AsyncIterator[None]:
    """`rabbitmqctl stop_app` (the node's Erlang VM keeps running); restarted on exit.

    Durable quorum queues and their persistent messages outlive it; every connection and
    exclusive queue does not.
    """
    require_tools("rabbitmqctl")
    await run("rabbitmqctl", "stop_app")
    try:
        yield
    finally:
        await run("rabbitmqctl", "start_app")
        await run("rabbitmqctl", "await_startup")
        await _until(_broker_port_open, "RabbitMQ")


def postgres_version() -> str:
    versions = os.listdir("/etc/postgresql")
    return max(versions, key=lambda v: [int(p) for p in re.findall(r"\d+", v)])


@contextlib.asynccontextmanager
async def postgres_stopped() -> AsyncIterator[None]:
    """The local PostgreSQL cluster stopped (fast: sessions are cut); restarted on exit."""
    require_tools("pg_ctlcluster")
    version = postgres_version()
    await run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop")
    try:
        yield
    finally:
        await run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start")
        await _until(_postgres_accepts, "PostgreSQL")


async def _rabbit_env(key: str) -> int | None:
    out = await run("rabbitmqctl", "eval", f"application:get_env(rabbit, {key}).")
    found = re.search(r"\{ok,\s*(\d+)\}", out)
    return int(found.group(1)) if found else None


async def _set_rabbit_env(key: str, value: int) -> None:
    await run("rabbitmqctl", "eval", f"application:set_env(rabbit, {key}, {value}).")


@contextlib.asynccontextmanager
async def consumer_timeout(ms: int, check_every_ms: int = 1000) -> AsyncIterator[None]:
    """RabbitMQ's node-wide `consumer_timeout` lowered, and checked every `check_every_ms`
    (the channels' tick, `channel_tick_interval`, a minute by default); both put back as
    they were on exit. Channels opened inside the block are subject to them."""
    require_tools("rabbitmqctl")
    wanted = {"consumer_timeout": ms, "channel_tick_interval": check_every_ms}
    defaults = {"consumer_timeout": DEFAULT_CONSUMER_TIMEOUT_MS, "channel_tick_interval": 60_000}
    before = {key: await _rabbit_env(key) or defaults[key] for key in wanted}
    try:
        for key, value in wanted.items():
            await _set_rabbit_env(key, value)
            if await _rabbit_env(key) != value:
                raise RuntimeError(f"RabbitMQ's {key} did not change to {value}")
        yield
    finally:
        for key, value in before.items():
            await _set_rabbit_env(key, value)
