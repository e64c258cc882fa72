"""The events the API sends, always after its transaction committed.

A `JobDue` must reach the broker or the client hears 503. A `JobDefinitionChanged` is a
hint: the change is already stored, and schedulers re-read job definitions every
`ORC_SCHEDULER_REFRESH_SECONDS` anyway, so a notice the broker drops is logged and the
request still succeeds. (It is published non-mandatory: no scheduler running is fine.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Literal

from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from api.errors import BrokerUnavailable
from common.bus import Bus
from common.events import JobDefinitionChanged, JobDue
from common.states import Trigger

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 10.0


async def publish_change(
    bus: Bus, job_id: uuid.UUID, change: Literal["created", "updated", "deleted"]
) -> None:
    event = JobDefinitionChanged(job_definition_id=job_id, change=change)
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
            await bus.publish(event)
    except (TimeoutError, *CONNECTION_EXCEPTIONS):
        log.warning(
            "could not publish %s for job %s (%s); schedulers see it on their next refresh",
            event.routing_key,
            job_id,
            change,
            exc_info=True,
        )


async def publish_manual_run(bus: Bus, job_id: uuid.UUID) -> uuid.UUID:
    """Ask for a run of the job now; returns the run id the run-coordinator will use."""
    run_id = uuid.uuid4()
    event = JobDue(job_definition_id=job_id, run_id=run_id, trigger=Trigger.MANUAL)
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
            await bus.publish(event)
    except (TimeoutError, *CONNECTION_EXCEPTIONS) as exc:
        log.warning("could not publish JobDue for job %s", job_id, exc_info=True)
        raise BrokerUnavailable(detail="the message broker did not accept the run request") from exc
    return run_id
