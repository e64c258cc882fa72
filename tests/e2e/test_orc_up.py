"""`orc up` as a user starts it, with no token configured: it makes an admin token,
prints it, saves it (0600) where the CLI finds it, installs the demo with it; the CLI,
given no token, then works; and the process stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import stat
import sys
from pathlib import Path

import aio_pika
import httpx
import pytest

from tests.integration.api.conftest import bearer, free_port

pytestmark = pytest.mark.slow

TOKEN_LINE = re.compile(r"^\s+(orc_\S+)$", re.MULTILINE)


async def _orc(cwd: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orc",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_orc_up_gives_the_cli_a_token(
    clean_namespace: str, broker_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORC_")}
    env |= {
        "ORC_NAMESPACE": clean_namespace,
        "ORC_BROKER_URL": broker_url,
        "ORC_API_PORT": str(port),
    }
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orc",
        "up",
        "--concurrency",
        "1",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=(tmp_path / "up.log").open("wb"),
    )
    try:
        assert up.stdout is not None
        printed = ""
        async with asyncio.timeout(60):
            while not TOKEN_LINE.search(printed):
                line = await up.stdout.readline()
                assert line, (tmp_path / "up.log").read_text()
                printed += line.decode()
        token = TOKEN_LINE.search(printed).group(1)  # type: ignore[union-attr]
        saved = tmp_path / ".orc" / "token"
        assert saved.read_text().strip() == token
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600

        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, headers=bearer(token)) as client:
            async with asyncio.timeout(60):
                while True:
                    try:
                        runs = (await client.get("/job_runs")).json()
                    except httpx.TransportError:
                        runs = {"items": []}
                    if any(r["status"] == "COMPLETED" for r in runs["items"]):
                        break
                    await asyncio.sleep(0.2)
            assert (await client.get("/jobs")).json()["items"][0]["name"] == "demo-cities"
            assert (await client.get("/jobs", headers={"Authorization": ""})).status_code == 401

        # The CLI, run where `orc up` was, finds the saved token by itself.
        code, out, err = await _orc(tmp_path, env, "jobs", "run", "demo-cities", "--follow")
        assert code == 0, (out, err)
        code, out, err = await _orc(tmp_path, env, "runs", "list", "-o", "json")
        assert code == 0, err
        assert json.loads(out)["total"] >= 2
    finally:
        if up.returncode is None:
            up.send_signal(signal.SIGTERM)
        returncode = await asyncio.wait_for(up.wait(), 30)
    assert returncode == 0, (tmp_path / "up.log").read_text()

    # A second `orc up` reuses the saved token instead of making another.
    again = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orc",
        "up",
        "--no-demo",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert again.stdout is not None
        first = await asyncio.wait_for(again.stdout.readline(), 60)
        assert first.decode().startswith("orc up: the CLI uses the admin token saved in")
    finally:
        again.send_signal(signal.SIGTERM)
        await asyncio.wait_for(again.wait(), 30)
    assert (tmp_path / ".orc" / "token").read_text().strip() == token


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def _queue_consumers(broker_url: str, name: str) -> int:
    connection = await aio_pika.connect(broker_url)
    try:
        queue = await (await connection.channel()).declare_queue(name, passive=True)
        return int(queue.declaration_result.consumer_count or 0)
    finally:
        await connection.close()


async def test_orc_up_runs_its_workers_in_child_processes_that_die_with_it(
    clean_namespace: str, broker_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORC_")}
    env |= {
        "ORC_NAMESPACE": clean_namespace,
        "ORC_BROKER_URL": broker_url,
        "ORC_API_PORT": str(free_port()),
        "ORC_ADMIN_TOKEN": "orc_test_children",
    }
    up = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "orc", "up", "--no-demo", "--worker-processes", "2"),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(tmp_path / "up.log").open("wb"),
    )
    extract_queue = f"{clean_namespace}.tasks.extract"
    try:
        async with asyncio.timeout(60):
            while True:
                with contextlib.suppress(Exception):
                    if await _queue_consumers(broker_url, extract_queue) == 2:
                        break
                await asyncio.sleep(0.2)
        workers = _children(up.pid)
        assert len(workers) == 2, (tmp_path / "up.log").read_text()
        # `kill -9` leaves no time to stop them: they must notice on their own.
        up.kill()
        await up.wait()
        async with asyncio.timeout(30):
            while any(_alive(pid) for pid in workers):
                await asyncio.sleep(0.1)
        async with asyncio.timeout(30):
            while await _queue_consumers(broker_url, extract_queue) != 0:
                await asyncio.sleep(0.2)
    finally:
        if up.returncode is None:
            up.kill()
            await up.wait()
