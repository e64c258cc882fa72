"""The worker process: takes task messages, runs them, reports, then acks.

A task message is acked only after its outcome event (`TaskSucceeded` or `TaskFailed`) is
confirmed by the broker, so a worker that dies mid-task leaves the message to be
redelivered; the coordinator ignores whatever outcome arrives second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from pathlib import Path

from aio_pika.abc import AbstractIncomingMessage

from common.bus import Bus
from common.errors import PermanentError, PoisonMessage
from common.events import (
    TaskDispatched,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
)
from common.parsing import parse_event
from common.staging import StagingArea
from common.topology import task_queue
from worker.execution import run_task

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 1.0


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        bus: Bus,
        staging: StagingArea,
        data_root: Path,
        queues: list[str],
        concurrency: int = 4,
    ) -> None:
        self.bus = bus
        self.staging = staging
        self.data_root = data_root
        self.queues = queues
        self.concurrency = concurrency
        self.worker_id = make_worker_id()
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        ns = self.bus.topology.namespace
        for name in self.queues:
            await self.bus.consume(task_queue(ns, name), self._on_message, self.concurrency)
        log.info("worker %s consuming %s", self.worker_id, ", ".join(self.queues))

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with self._slots:
            try:
                await self._handle(message)
            except Exception:
                # The outcome could not be confirmed (the broker went away): leave the
                # message unacked; it is redelivered and the coordinator deduplicates.
                log.exception("task message %s not settled", message.message_id)
                if not message.processed:
                    try:
                        await message.nack(requeue=True)
                    except Exception:
                        log.debug("nack failed; the broker requeues it", exc_info=True)

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        try:
            task = parse_event(TaskDispatched, message.body)
        except PoisonMessage as exc:
            log.warning("dead-lettering a task message: %s", exc)
            await self.bus.dead_letter(message, str(exc))
            return
        await self.bus.publish(
            TaskStarted(
                task_id=task.task_id,
                run_id=task.run_id,
                attempt=task.attempt,
                worker_id=self.worker_id,
            )
        )
        loop = asyncio.get_running_loop()
        last_report = [0.0]

        def report_progress(rows: int) -> None:
            now = time.monotonic()
            if now - last_report[0] < PROGRESS_INTERVAL_SECONDS:
                return
            last_report[0] = now
            event = TaskProgress(
                task_id=task.task_id, run_id=task.run_id, attempt=task.attempt, rows=rows
            )
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._notice(event)))

        try:
            rows, staged = await asyncio.to_thread(
                run_task, task, self.staging, self.data_root, report_progress
            )
        except PermanentError as exc:
            outcome: TaskSucceeded | TaskFailed = self._failed(task, exc, retryable=False)
        except Exception as exc:
            outcome = self._failed(task, exc, retryable=True)
        else:
            outcome = TaskSucceeded(
                task_id=task.task_id,
                run_id=task.run_id,
                attempt=task.attempt,
                rows=rows,
                staged=staged,
            )
        await self.bus.publish(outcome)
        await message.ack()

    def _failed(self, task: TaskDispatched, exc: BaseException, retryable: bool) -> TaskFailed:
        log.warning("task %s attempt %d failed: %s", task.task_id, task.attempt, exc)
        return TaskFailed(
            task_id=task.task_id,
            run_id=task.run_id,
            attempt=task.attempt,
            error=f"{type(exc).__name__}: {exc}",
            retryable=retryable,
        )

    async def _notice(self, event: TaskProgress) -> None:
        try:
            await self.bus.publish(event)
        except Exception:
            log.debug("progress notice lost", exc_info=True)
