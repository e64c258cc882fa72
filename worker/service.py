"""The worker process: takes task messages, runs them, reports, then acks.

A task message is acked only after its outcome event (`TaskSucceeded` or `TaskFailed`, or a
`TaskOutcomes` carrying it with others: `worker.outcomes`) is confirmed by the broker, so
a worker that dies mid-task leaves the message to be redelivered; the coordinator ignores
whatever outcome arrives for a superseded attempt.

Two exceptions to "ack after the outcome", both deliberate:
- a task still running after `long_task_ack_seconds` is acked early, because RabbitMQ's
  node-wide `consumer_timeout` would otherwise hand it to a second worker; from then on the
  worker's heartbeats vouch for it, and a lost worker's task gets a new attempt;
- on shutdown, attempts that did not finish within the grace period are handed back
  (nacked with requeue) for another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from aio_pika.abc import AbstractIncomingMessage

from common.aio import wait_or_timeout
from common.bus import Bus, Consumer
from common.errors import OrcError, PermanentError, PoisonMessage
from common.events import (
    LoadResult,
    RunCancelled,
    RunningAttempt,
    StagedData,
    TaskDispatched,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSucceeded,
    WorkerHeartbeat,
    utcnow,
)
from common.logs import log_context
from common.metrics import BYTES_STAGED, ROWS, TASK_ATTEMPTS, TASK_DURATION
from common.parsing import parse_event
from common.staging import StagingArea
from common.states import TaskType, WorkerStatus
from common.topology import task_queue
from common.tracing import consuming, record_span
from worker.execution import (
    ExecutionOptions,
    LoadAfter,
    TaskResult,
    execute_task,
    extract_then_load,
)
from worker.outcomes import OutcomeSender
from worker.slots import Slot, Slots
from worker.threads import AttemptThreads

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
"""Tasks a worker runs at once unless told otherwise (`--concurrency`): threads, since most
extracts and loads wait on I/O. Each slot is also a message the worker holds (its
prefetch); for small tasks, 8 instead of 4 cut the CPU a run costs by a tenth (worker and
broker see deliveries and outcomes in bigger groups). Lower it for tasks that hold much
memory at once."""
PROGRESS_INTERVAL_SECONDS = 1.0
REMEMBERED_CANCELLATIONS = 10_000
LOAD_START_POLL_SECONDS = 1.0
"""While an extract runs, how often its wait looks whether its load (which has a
timeout) has started."""


class AttemptInterrupted(OrcError):
    """Raised inside a running plugin (at its next progress report) to stop it."""


def make_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class WorkerConfig:
    queues: tuple[str, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    prefetch_per_slot: int = 4
    """Task messages held per queue, per slot: see the `Worker` docstring."""
    long_task_seconds: float = 1.0
    """An attempt running this long is long: see `worker.slots`."""
    heartbeat_seconds: float = 5.0
    grace_seconds: float = 30.0
    long_task_ack_seconds: float = 600.0
    start_report_seconds: float = 0.2
    execution: ExecutionOptions = field(default_factory=ExecutionOptions)


@dataclass
class _Attempt:
    task: TaskDispatched
    message: AbstractIncomingMessage
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""
    settled: bool = False

    def interrupt(self, reason: str) -> None:
        self.stop_reason = reason
        self.stop.set()

    async def settle(self, requeue: bool = False) -> None:
        """Ack (or hand back) the message, once."""
        if self.settled:
            return
        self.settled = True
        if requeue:
            await self.message.nack(requeue=True)
        else:
            await self.message.ack()


class Worker:
    """Runs up to `concurrency` attempts at once, and holds up to `prefetch_per_slot`
    times as many messages of each queue: an attempt leaves its slot when its plugin
    returns, and a held message takes it while the finished attempt's outcome still
    awaits the broker's confirm (`worker.slots`). While every slot runs a long attempt
    the worker takes no deliveries and passes the messages it holds on."""

    def __init__(
        self, bus: Bus, staging: StagingArea, data_root: Path, config: WorkerConfig
    ) -> None:
        self.bus = bus
        self.staging = staging
        self.data_root = data_root
        self.config = config
        self.worker_id = make_worker_id()
        self.started_at: datetime = utcnow()
        self._slots = Slots(config.concurrency, config.long_task_seconds, self._on_saturated)
        self._consumers: list[Consumer] = []
        self._consuming = True
        self._pacing: asyncio.Task[None] | None = None
        self._running: dict[uuid.UUID, _Attempt] = {}
        self._cancelled_runs: deque[uuid.UUID] = deque(maxlen=REMEMBERED_CANCELLATIONS)
        self._stopping = False
        self._heartbeats: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._takes_loads = TaskType.LOAD.queue_suffix in config.queues
        self._outcomes = OutcomeSender(bus)
        self._threads = AttemptThreads(config.concurrency)

    async def start(self) -> None:
        cancellations = await self.bus.declare_private_queue([RunCancelled.routing_key])
        await cancellations.consume(self._on_cancelled, no_ack=True)
        ns = self.bus.topology.namespace
        for name in self.config.queues:
            self._consumers.append(
                await self.bus.consume(
                    task_queue(ns, name),
                    self._on_message,
                    self.config.concurrency * self.config.prefetch_per_slot,
                )
            )
        self._heartbeats = asyncio.create_task(self._beat())
        log.info("worker %s consuming %s", self.worker_id, ", ".join(self.config.queues))

    async def shutdown(self) -> None:
        """Stop taking tasks, let running ones finish within the grace period, hand back
        the rest, and say goodbye."""
        try:
            self._stopping = True
            if self._pacing is not None:
                # Let it finish what it does (a consume in flight must get its tag, to
                # be cancelled below); seeing `_stopping`, it pauses the consumers.
                with contextlib.suppress(Exception):
                    await self._pacing
            for consumer in self._consumers:
                with contextlib.suppress(Exception):
                    await consumer.cancel()
            await wait_or_timeout(self._idle.wait(), self.config.grace_seconds)
            # Attempts whose message was acked early cannot be handed back: the goodbye
            # heartbeat names them, and the coordinator gives them a new attempt.
            abandoned = [a for a in self._running.values() if a.settled]
            for attempt in list(self._running.values()):
                log.warning("handing back task %s: grace period over", attempt.task.task_id)
                attempt.interrupt("worker shutting down")
                with contextlib.suppress(Exception):
                    await attempt.settle(requeue=True)
            if self._heartbeats is not None:
                self._heartbeats.cancel()
            with contextlib.suppress(Exception):
                await self.bus.publish(self._heartbeat(WorkerStatus.STOPPED, abandoned))
        finally:
            # Also when the runtime cancels the shutdown half-way.
            self._threads.close()

    def _heartbeat(
        self, status: WorkerStatus = WorkerStatus.ACTIVE, running: list[_Attempt] | None = None
    ) -> WorkerHeartbeat:
        attempts = self._running.values() if running is None else running
        return WorkerHeartbeat(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            queues=self.config.queues,
            concurrency=self.config.concurrency,
            started_at=self.started_at,
            status=status,
            running=tuple(
                RunningAttempt(task_id=a.task.task_id, run_id=a.task.run_id, attempt=a.task.attempt)
                for a in attempts
            ),
            interval_seconds=self.config.heartbeat_seconds,
        )

    async def _beat(self) -> None:
        while True:
            try:
                await self.bus.publish(self._heartbeat())
            except Exception:
                log.warning("heartbeat not sent", exc_info=True)
            await asyncio.sleep(self.config.heartbeat_seconds)

    async def _on_cancelled(self, message: AbstractIncomingMessage) -> None:
        try:
            event = parse_event(RunCancelled, message.body)
        except PoisonMessage:
            return
        self._cancelled_runs.append(event.run_id)
        for attempt in self._running.values():
            if attempt.task.run_id == event.run_id:
                attempt.interrupt("run cancelled")

    def _on_saturated(self, saturated: bool) -> None:
        log.info(
            "every slot runs a long attempt: pausing deliveries"
            if saturated
            else "a slot is free: resuming deliveries"
        )
        if self._pacing is None or self._pacing.done():
            self._pacing = asyncio.create_task(self._pace())

    async def _pace(self) -> None:
        """Pause or resume the task consumers until they do what the slots want: take
        deliveries unless every slot runs long (one task does it, so a pause and a resume
        never cross on the wire)."""
        while (want := not self._slots.saturated and not self._stopping) != self._consuming:
            try:
                for consumer in self._consumers:
                    await (consumer.resume() if want else consumer.cancel())
                self._consuming = want
            except Exception:
                log.warning("could not %s consuming", "resume" if want else "pause", exc_info=True)
                await asyncio.sleep(1.0)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._stopping:
            await _hand_back(message)
            return
        slot = await self._slots.take()
        if slot is None:
            await self._pass_on(message)
            return
        try:
            if self._stopping:
                await _hand_back(message)
                return
            await self._handle(message, slot)
        except Exception:
            # The outcome could not be confirmed (the broker went away): leave the
            # message to be redelivered; the coordinator deduplicates.
            log.exception("task message %s not settled", message.message_id)
            if not message.processed:
                await _hand_back(message)
        finally:
            slot.release()

    async def _pass_on(self, message: AbstractIncomingMessage) -> None:
        """Every slot runs long: let another worker have the message."""
        log.info("passing task message %s on to another worker", message.message_id)
        try:
            await self.bus.pass_on(message)
        except Exception:
            log.warning("could not pass on task message %s", message.message_id, exc_info=True)
            await _hand_back(message)

    async def _handle(self, message: AbstractIncomingMessage, slot: Slot) -> None:
        try:
            task = parse_event(TaskDispatched, message.body)
        except PoisonMessage as exc:
            log.warning("dead-lettering a task message: %s", exc)
            await self.bus.dead_letter(message, str(exc))
            return
        if task.run_id in self._cancelled_runs:
            await message.ack()
            return
        with (
            log_context(
                job=task.job_definition_id,
                run_id=task.run_id,
                task_id=task.task_id,
                attempt=task.attempt,
            ),
            consuming(
                f"worker {task.task_type.value} {task.plugin}",
                message.headers,
                run_id=task.run_id,
                task_id=task.task_id,
                attempt=task.attempt,
            ),
        ):
            await self._attempt(task, message, slot)

    async def _attempt(
        self, task: TaskDispatched, message: AbstractIncomingMessage, slot: Slot
    ) -> None:
        attempt = _Attempt(task, message)
        self._running[task.task_id] = attempt
        self._idle.clear()
        started_at = utcnow()
        # The start is reported only if the attempt is still running after a moment; a
        # shorter one carries its start in its outcome (half the messages for small tasks).
        # Once sent, the start is confirmed while the task runs: only the outcome waits
        # for it (one channel keeps the order, so the coordinator sees the start first).
        started: list[asyncio.Future[None]] = []

        def report_start() -> None:
            event = TaskStarted(
                task_id=task.task_id,
                run_id=task.run_id,
                attempt=task.attempt,
                worker_id=self.worker_id,
                occurred_at=started_at,
            )
            started.append(asyncio.ensure_future(self.bus.publish(event)))

        loop = asyncio.get_running_loop()
        if self.config.start_report_seconds > 0:
            timer: asyncio.TimerHandle | None = loop.call_later(
                self.config.start_report_seconds, report_start
            )
        else:
            timer = None
            report_start()
        try:
            if self._loads_after(task):
                outcome = await self._execute_with_load(attempt)
            else:
                outcome = await self._execute(attempt)
            slot.release()  # the next message runs while this outcome is confirmed
            if timer is not None:
                timer.cancel()
            if started:
                await started[0]
            else:
                outcome = outcome.model_copy(
                    update={"started_at": started_at, "worker_id": self.worker_id}
                )
            if attempt.stop_reason == "worker shutting down":
                return
            await self._outcomes.send(outcome)
            await attempt.settle()
        finally:
            if timer is not None:
                timer.cancel()
            for future in started:
                if not future.done():
                    future.cancel()
            self._running.pop(task.task_id, None)
            if not self._running:
                self._idle.set()

    def _loads_after(self, task: TaskDispatched) -> bool:
        """Whether this worker runs the load that rode in `task` right after it. (A run
        cancelled before the attempt began was skipped by `_handle`; one cancelled since
        stops the attempt, and so its load, through `attempt.stop`.)"""
        return task.then is not None and self._takes_loads and not self._stopping

    def _reporter(
        self, task_id: uuid.UUID, run_id: uuid.UUID, attempt_no: int, attempt: _Attempt
    ) -> Callable[[int], None]:
        """The plugin's `report_progress`: a `TaskProgress` notice at most once a
        `PROGRESS_INTERVAL_SECONDS`, and the place where an interrupted attempt stops."""
        loop = asyncio.get_running_loop()
        last_report = [time.monotonic()]  # the first report after an interval, not at once

        def report_progress(rows: int) -> None:
            if attempt.stop.is_set():
                raise AttemptInterrupted(attempt.stop_reason)
            now = time.monotonic()
            if now - last_report[0] < PROGRESS_INTERVAL_SECONDS:
                return
            last_report[0] = now
            event = TaskProgress(task_id=task_id, run_id=run_id, attempt=attempt_no, rows=rows)
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._notice(event)))

        return report_progress

    def _early_ack(self, attempt: _Attempt) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(
            self.config.long_task_ack_seconds,
            lambda: asyncio.ensure_future(self._ack_early(attempt)),
        )

    async def _execute(self, attempt: _Attempt) -> TaskSucceeded | TaskFailed:
        task = attempt.task
        early_ack = self._early_ack(attempt)
        work = self._threads.run(
            execute_task,
            task,
            self.staging,
            self.data_root,
            self._reporter(task.task_id, task.run_id, task.attempt, attempt),
            self.config.execution,
        )
        began = time.monotonic()
        try:
            result = await asyncio.wait_for(asyncio.shield(work), task.timeout_seconds)
        except TimeoutError:
            _abandon(work)
            return self._timed_out(task, attempt)
        except Exception as exc:
            return self._error(task, exc)
        finally:
            early_ack.cancel()
            _observe_duration(task, time.monotonic() - began)
        return self._succeeded(task, result)

    async def _execute_with_load(self, attempt: _Attempt) -> TaskSucceeded | TaskFailed:
        """The extract and the load that rode in its dispatch, in one hop to a thread
        (`extract_then_load`), each within its own timeout: the extract's outcome, carrying
        the load's when the load ran (see `TaskDispatched.then`)."""
        task = attempt.task
        assert task.then is not None
        early_ack = self._early_ack(attempt)
        ran = LoadAfter()
        work = self._threads.run(
            extract_then_load,
            task,
            self.staging,
            self.data_root,
            self._reporter(task.task_id, task.run_id, task.attempt, attempt),
            # A cancelled run or an overdue extract sets `attempt.stop`: the load then
            # does not start, or stops at its next progress report.
            self._reporter(task.then.task_id, task.run_id, 1, attempt),
            lambda: not self._stopping and not attempt.stop.is_set(),
            ran,
            self.config.execution,
        )
        began = time.monotonic()
        try:
            overdue = await _overdue_phase(work, task, ran, began)
        finally:
            early_ack.cancel()
        _observe_duration(task, (ran.load_began or time.monotonic()) - began)
        if overdue == "extract":
            _abandon(work)
            return self._timed_out(task, attempt)
        if overdue is None and (error := work.exception()) is not None:
            return self._error(task, error)
        assert ran.extracted is not None
        outcome = self._succeeded(task, ran.extracted)
        if ran.load is None or ran.load_began is None or ran.load_started_at is None:
            return outcome
        load, ended = ran.load, ran.load_ended or time.monotonic()
        _observe_duration(load, ended - ran.load_began)
        loaded: TaskSucceeded | TaskFailed
        if overdue == "load":
            loaded = self._timed_out(load, attempt)
        elif ran.load_error is not None:
            loaded = self._error(load, ran.load_error)
        else:
            assert ran.loaded is not None
            loaded = self._succeeded(load, ran.loaded)
        record_span(
            f"worker {load.task_type.value} {load.plugin}",
            ran.load_began,
            ended,
            run_id=load.run_id,
            task_id=load.task_id,
            attempt=load.attempt,
        )
        # No `TaskStarted` for it: the coordinator makes the load task only when it hears
        # of the extract's success, so the start rides in the result.
        result = LoadResult.of(loaded, ran.load_started_at, self.worker_id)
        return outcome.model_copy(update={"load": result})

    def _succeeded(self, task: TaskDispatched, result: TaskResult) -> TaskSucceeded:
        TASK_ATTEMPTS.labels(task.task_type.value, task.plugin, "succeeded").inc()
        ROWS.labels(task.task_type.value, task.plugin).inc(result.rows)
        if result.staged is not None:
            BYTES_STAGED.labels(task.plugin).inc(staged_bytes(result.staged))
        return TaskSucceeded(
            task_id=task.task_id,
            run_id=task.run_id,
            attempt=task.attempt,
            rows=result.rows,
            staged=result.staged,
            state_update=result.state_update,
        )

    def _timed_out(self, task: TaskDispatched, attempt: _Attempt) -> TaskFailed:
        """`task` (the attempt's own, or its load) overran its timeout. The thread cannot
        be killed: it is told to stop at its next progress report, and whatever it
        produces after this is ignored."""
        attempt.interrupt(f"timed out after {task.timeout_seconds:g}s")
        return self._failed(task, TimeoutError(attempt.stop_reason), retryable=True)

    def _error(self, task: TaskDispatched, exc: BaseException) -> TaskFailed:
        """The outcome of an attempt that raised: an interruption or a `PermanentError` is
        not retried, anything else may be."""
        retryable = not isinstance(exc, AttemptInterrupted | PermanentError)
        return self._failed(task, exc, retryable=retryable)

    async def _ack_early(self, attempt: _Attempt) -> None:
        if attempt.settled or attempt.task.task_id not in self._running:
            return
        log.info("task %s runs long: acking its message early", attempt.task.task_id)
        with contextlib.suppress(Exception):
            await attempt.settle()

    def _failed(self, task: TaskDispatched, exc: BaseException, retryable: bool) -> TaskFailed:
        log.warning("task %s attempt %d failed: %s", task.task_id, task.attempt, exc)
        outcome = (
            "timed_out"
            if isinstance(exc, TimeoutError)
            else "interrupted"
            if isinstance(exc, AttemptInterrupted)
            else "failed"
        )
        TASK_ATTEMPTS.labels(task.task_type.value, task.plugin, outcome).inc()
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


def _abandon(work: asyncio.Future[Any]) -> None:
    """Let an overdue attempt's thread end on its own: the error it ends with (it was told
    to stop) is of no use, and unretrieved it would be logged as an error."""
    work.add_done_callback(lambda done: done.cancelled() or done.exception())


def _observe_duration(task: TaskDispatched, seconds: float) -> None:
    TASK_DURATION.labels(task.task_type.value, task.plugin).observe(seconds)


async def _overdue_phase(
    work: asyncio.Future[None], task: TaskDispatched, ran: LoadAfter, began: float
) -> Literal["extract", "load"] | None:
    """Wait for an extract-then-load hop; the phase that overran its timeout, if one did.

    The thread says nothing when it passes from the extract to the load (waking the event
    loop for it would cost what the single hop saves): while the extract runs, the wait is
    cut short often enough to notice a load that has a timeout of its own.
    """
    assert task.then is not None
    load_limit = task.then.timeout_seconds
    while not work.done():
        phase: Literal["extract", "load"]
        if ran.load_began is None:
            phase, limit, since = "extract", task.timeout_seconds, began
        else:
            phase, limit, since = "load", load_limit, ran.load_began
        wait = None if limit is None else since + limit - time.monotonic()
        if wait is not None and wait <= 0:
            return phase
        if phase == "extract" and load_limit is not None:
            look_again = min(LOAD_START_POLL_SECONDS, load_limit / 2)
            wait = look_again if wait is None else min(wait, look_again)
        await asyncio.wait([work], timeout=wait)
    return None


def staged_bytes(staged: StagedData) -> int:
    """Size of the staged data, for the bytes-moved metric (files: 0 where they cannot be
    read; an inline result: its decoded size)."""
    if staged.inline is not None:
        return len(staged.inline) * 3 // 4
    total = 0
    for uri in staged.files:
        with contextlib.suppress(Exception):
            path = uri.removeprefix("file://")
            total += os.path.getsize(path) if "://" not in path else 0
    return total


async def _hand_back(message: AbstractIncomingMessage) -> None:
    with contextlib.suppress(Exception):
        await message.nack(requeue=True)
