"""The engine's components as OS processes (`python -m orc <component>`), as deployed.

Each process logs to a file of its own in the scenario's folder; a failing scenario shows
their tails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.faults.observe import Recorder

STOP_SECONDS = 20.0
READY_SECONDS = 60.0


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    told_to_exit: bool = False
    """The scenario killed or stopped it: its exit is no crash."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, sig: signal.Signals) -> None:
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            self.told_to_exit = True
        if self.alive():
            self.popen.send_signal(sig)

    async def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after `timeout`."""
        try:
            return await asyncio.to_thread(self.popen.wait, timeout)
        except subprocess.TimeoutExpired:
            return None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text)


class Cluster:
    """Starts, signals and stops the scenario's `orc` processes."""

    def __init__(self, env: Mapping[str, str], workdir: Path, recorder: Recorder) -> None:
        self.env = dict(env)
        self.workdir = workdir
        self.recorder = recorder
        self.procs: list[Proc] = []

    def spawn(self, component: str, *args: str, env: Mapping[str, str] | None = None) -> Proc:
        name = f"{component}-{sum(p.name.startswith(component) for p in self.procs) + 1}"
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            popen = subprocess.Popen(
                [sys.executable, "-m", "orc", component, *args],
                env={**self.env, **(env or {})},
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def coordinator(self, env: Mapping[str, str] | None = None) -> Proc:
        return self.spawn("coordinator", env=env)

    def scheduler(self) -> Proc:
        return self.spawn("scheduler")

    def worker(self, concurrency: int = 4, env: Mapping[str, str] | None = None) -> Proc:
        return self.spawn("worker", "--concurrency", str(concurrency), env=env)

    async def ready(self, *workers: Proc) -> None:
        """Return once each worker has sent its first heartbeat (it consumes its queues)."""
        await self.recorder.expect(
            lambda: all(self.recorder.worker_ids(p.pid) or not p.alive() for p in workers),
            READY_SECONDS,
            "a first heartbeat from every new worker",
        )
        dead = [p for p in workers if not p.alive()]
        if dead:
            raise AssertionError(f"{dead[0].name} exited at start:\n{dead[0].tail()}")

    async def workers(
        self, count: int, concurrency: int = 4, env: Mapping[str, str] | None = None
    ) -> list[Proc]:
        """Start `count` workers and return once each has sent its first heartbeat."""
        procs = [self.worker(concurrency, env) for _ in range(count)]
        await self.ready(*procs)
        return procs

    def worker_id(self, proc: Proc) -> str:
        (found,) = self.recorder.worker_ids(proc.pid)
        return found

    async def kill(self, proc: Proc) -> None:
        """kill -9: no goodbye, no hand-back, un-acked messages return to their queues."""
        proc.send(signal.SIGKILL)
        await proc.wait(STOP_SECONDS)

    async def stop_all(self) -> None:
        """Resume what was frozen, SIGTERM everything, SIGKILL what outlives the wait."""
        for proc in self.procs:
            proc.send(signal.SIGCONT)
            proc.send(signal.SIGTERM)
        for proc in self.procs:
            if await proc.wait(STOP_SECONDS) is None:
                proc.send(signal.SIGKILL)
                await proc.wait(STOP_SECONDS)

    def crashed(self) -> list[Proc]:
        """Processes that exited although no one told them to."""
        return [p for p in self.procs if not p.alive() and not p.told_to_exit]

    def logs(self, lines: int = 30) -> str:
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.tail(lines)}" for p in self.procs)


def subprocess_env(base: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    """The inherited environment without any `ORC_*` setting of the caller, plus ours."""
    kept = {k: v for k, v in base.items() if not k.startswith("ORC_") or k.startswith("ORC_TEST_")}
    return {**kept, **settings}


def python_path(*folders: Path) -> str:
    existing = os.environ.get("PYTHONPATH")
    return os.pathsep.join([*(str(f) for f in folders), *([existing] if existing else [])])
