"""The cron scheduler: asks for one run per due tick of every enabled, scheduled job.

A tick's runs go out together, `JOBS_PER_MESSAGE` to a `JobsDue`: thousands of jobs due
on the same minute are a few dozen messages, not thousands.

Its run id for a tick is derived from (job id, tick), so a second scheduler, or this one
restarted, never makes a second run of the same tick. After downtime it fires only the
latest missed tick of each job, once. It learns of job changes from `JobDefinitionChanged`
events and, as a safety net, re-reads the definitions every `scheduler_refresh_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.aio import finish_first, wait_or_timeout
from common.bus import Bus
from common.cron import InvalidSchedule, latest_tick, next_tick
from common.db.models import JobDefinition, JobRun
from common.events import DueRun, JobDefinitionChanged, JobsDue, utcnow
from common.ids import scheduled_run_id
from common.metrics import TICK_LAG
from common.states import Trigger
from common.tracing import starting

log = logging.getLogger(__name__)

RETRY_PAUSE_SECONDS = 0.5
JOBS_PER_MESSAGE = 100
"""Runs per `JobsDue`: the coordinator's batch, so one message is one transaction."""


@dataclass(frozen=True)
class ScheduledJob:
    id: uuid.UUID
    schedule: str
    timezone: str
    created_at: datetime


class _Ticks:
    """The latest tick at or before `now` and the next one after it, per (schedule, zone).

    Thousands of jobs share a handful of schedules: each is worked out once per round,
    not once per job (croniter costs tens of microseconds; 10,000 jobs took seconds).
    """

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._known: dict[tuple[str, str], tuple[datetime | None, datetime]] = {}

    def around(self, job: ScheduledJob) -> tuple[datetime | None, datetime]:
        """Raises `InvalidSchedule` for a schedule or zone that cannot be used."""
        key = (job.schedule, job.timezone)
        if key not in self._known:
            self._known[key] = (
                latest_tick(job.schedule, job.timezone, self.now),
                next_tick(job.schedule, job.timezone, self.now),
            )
        return self._known[key]


class Scheduler:
    def __init__(
        self,
        bus: Bus,
        sessionmaker: async_sessionmaker[AsyncSession],
        refresh_seconds: float = 30.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bus = bus
        self.sessionmaker = sessionmaker
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self._jobs: dict[uuid.UUID, ScheduledJob] = {}
        self._next: dict[uuid.UUID, datetime] = {}
        self._changed = asyncio.Event()

    async def run(self) -> None:
        queue = await self.bus.declare_private_queue([JobDefinitionChanged.routing_key])
        await queue.consume(self._on_change, no_ack=True)
        await self._reload(catch_up=True)
        last_refresh = self.clock()
        while True:
            now = self.clock()
            if (
                now - last_refresh
            ).total_seconds() >= self.refresh_seconds or self._changed.is_set():
                self._changed.clear()
                await self._reload(catch_up=False)
                last_refresh = now
            await self._fire_due(now)
            await self._sleep_until_next(last_refresh)

    async def _on_change(self, message: AbstractIncomingMessage) -> None:
        self._changed.set()

    async def _sleep_until_next(self, last_refresh: datetime) -> None:
        now = self.clock()
        deadline = (last_refresh - now).total_seconds() + self.refresh_seconds
        if self._next:
            deadline = min(deadline, (min(self._next.values()) - now).total_seconds())
        if deadline <= 0:
            return
        await wait_or_timeout(self._changed.wait(), deadline)

    async def _reload(self, catch_up: bool) -> None:
        jobs, last_ticks = await finish_first(self._read_jobs(catch_up))
        now = self.clock()
        missed: list[tuple[ScheduledJob, datetime]] = []
        for job_id in list(self._next):
            if job_id not in jobs or jobs[job_id] != self._jobs.get(job_id):
                del self._next[job_id]
        self._jobs = jobs
        ticks = _Ticks(now)
        for job in jobs.values():
            if job.id in self._next:
                continue
            try:
                latest, following = ticks.around(job)
            except InvalidSchedule as exc:
                log.error("job %s has an unusable schedule: %s", job.id, exc)
                continue
            if catch_up and latest is not None:
                # Fire the latest tick missed while no scheduler ran, once.
                last = last_ticks.get(job.id)
                if latest > (max(last, job.created_at) if last else job.created_at):
                    missed.append((job, latest))
            self._next[job.id] = following
        if missed:
            await self._publish(missed)

    async def _read_jobs(
        self, catch_up: bool
    ) -> tuple[dict[uuid.UUID, ScheduledJob], dict[uuid.UUID, datetime]]:
        """The enabled scheduled jobs, and with `catch_up` the last tick each one ran."""
        async with self.sessionmaker() as session:
            rows = (
                await session.execute(
                    select(JobDefinition).where(
                        JobDefinition.enabled.is_(True), JobDefinition.schedule.is_not(None)
                    )
                )
            ).scalars()
            jobs = {
                j.id: ScheduledJob(j.id, j.schedule or "", j.timezone, j.created_at) for j in rows
            }
            last_ticks = await self._last_scheduled_ticks(session) if catch_up else {}
        return jobs, last_ticks

    async def _last_scheduled_ticks(self, session: AsyncSession) -> dict[uuid.UUID, datetime]:
        stmt = (
            select(JobRun.job_definition_id, func.max(JobRun.scheduled_for))
            .where(JobRun.trigger == Trigger.SCHEDULE)
            .group_by(JobRun.job_definition_id)
        )
        result: dict[uuid.UUID, datetime] = {}
        for job_id, tick in (await session.execute(stmt)).all():
            if tick is not None:
                result[job_id] = tick
        return result

    async def _fire_due(self, now: datetime) -> None:
        due = [(job_id, tick) for job_id, tick in self._next.items() if tick <= now]
        if not due:
            return
        ticks = _Ticks(now)
        firing: list[tuple[ScheduledJob, datetime]] = []
        following: dict[uuid.UUID, datetime] = {}
        for job_id, _ in due:
            job = self._jobs.get(job_id)
            if job is None:
                continue
            # If the loop woke late and several ticks passed, only the latest one runs.
            tick, following[job_id] = ticks.around(job)
            if tick is not None:
                firing.append((job, tick))
        try:
            await self._publish(firing)
        except Exception as exc:
            # The ticks stay due and are tried again: their run ids keep a retry harmless.
            log.error("could not publish %d due ticks: %s", len(firing), exc)
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            return
        self._next.update(following)
        log.info("due ticks fired: %d", len(firing))

    async def _publish(self, firing: list[tuple[ScheduledJob, datetime]]) -> None:
        """One `JobsDue` per `JOBS_PER_MESSAGE` ticks, their confirms awaited together."""
        events = [
            JobsDue(
                runs=tuple(
                    DueRun(
                        job_definition_id=job.id,
                        run_id=scheduled_run_id(job.id, tick),
                        scheduled_for=tick,
                    )
                    for job, tick in firing[start : start + JOBS_PER_MESSAGE]
                )
            )
            for start in range(0, len(firing), JOBS_PER_MESSAGE)
        ]
        with starting("scheduler tick", jobs=len(firing)):
            await asyncio.gather(*(self.bus.publish(event) for event in events))
        now = self.clock()
        for job, tick in firing:
            TICK_LAG.observe(max(0.0, (now - tick).total_seconds()))
            log.debug("job %s due at %s", job.id, tick.isoformat())
