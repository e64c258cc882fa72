"""Worker processes that `orc up` starts beside itself, so one machine's second core works.

One Python process runs one core's worth of work; with the API, the scheduler and the
coordinator in `orc up`'s own process, the tasks run in `orc worker` children. They get
the same environment (the metrics port, if any, moved along by one each), stop when asked
and die with their parent, and one that crashes is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Sequence

from common.settings import Settings
from orc.runtime import Component, Resources

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 1.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A `kill -9` of `orc up` must not leave its workers behind holding messages.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _environment(settings: Settings, index: int) -> dict[str, str]:
    env = dict(os.environ)
    if settings.metrics_port is not None:
        env["ORC_METRICS_PORT"] = str(settings.metrics_port + 1 + index)
    return env


def worker_processes(count: int, queues: Sequence[str], concurrency: int) -> Component:
    """A component that keeps `count` `orc worker` processes running until cancelled."""

    async def run(res: Resources) -> None:
        command = [sys.executable, "-m", "orc", "worker", "--concurrency", str(concurrency)]
        for queue in queues:
            command += ["--queue", queue]
        await asyncio.gather(
            *(
                _supervise(command, _environment(res.settings, i), res.settings)
                for i in range(count)
            )
        )

    return run


async def _supervise(command: list[str], env: dict[str, str], settings: Settings) -> None:
    while True:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, preexec_fn=_die_with_parent
        )
        try:
            code = await process.wait()
        except asyncio.CancelledError:
            await _stop(process, settings.worker_grace_seconds + 5)
            raise
        log.error("worker process %d exited with %d; starting another", process.pid, code)
        await asyncio.sleep(RESTART_DELAY_SECONDS)


async def _stop(process: asyncio.subprocess.Process, grace_seconds: float) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace_seconds)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
