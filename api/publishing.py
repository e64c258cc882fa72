"""The events the API sends, always after its transaction committed.

A `JobDue` or a `RunCancelRequested` must reach the broker or the client hears 503. A
`JobDefinitionChanged` is a hint: the change is already stored, and schedulers re-read job
definitions every `ORC_SCHEDULER_REFRESH_SECONDS` anyway, so a notice the broker drops is
logged and the request still succeeds. (It is published non-mandatory: no scheduler
running is fine.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Literal

from aio_pika.exceptions import CONNECTION_EXCEPTIONS, DeliveryError, PublishError

from api.errors import BrokerUnavailable
from common.bus import Bus
from common.events import Event, JobDefinitionChanged, JobDue, RunCancelRequested
from common.ids import new_id
from common.states import Trigger

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 10.0

# Publishing failed: the broker is gone, too slow, refused the message or routed it nowhere.
_PUBLISH_FAILURES = (TimeoutError, DeliveryError, PublishError, *CONNECTION_EXCEPTIONS)

_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b7f5a0e-2f7c-4b8e-9d57-6f1f2b0c8e31")


def manual_run_id(job_id: uuid.UUID, idempotency_key: str | None) -> uuid.UUID:
    """The id of a manual run: derived from (job, key) when the client sent an
    `Idempotency-Key`, so the same key twice names the same run (which the coordinator
    records once); a fresh one otherwise."""
    if idempotency_key is None:
        return new_id()
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"manual:{job_id}:{idempotency_key}")


async def _publish_or_503(bus: Bus, event: Event, what: str) -> None:
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
            await bus.publish(event)
    except _PUBLISH_FAILURES as exc:
        log.warning("could not publish %s", event.routing_key, exc_info=True)
        raise BrokerUnavailable(detail=f"the message broker did not accept the {what}") from exc


async def publish_change(
    bus: Bus, job_id: uuid.UUID, change: Literal["created", "updated", "deleted"]
) -> None:
    event = JobDefinitionChanged(job_definition_id=job_id, change=change)
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_SECONDS):
            await bus.publish(event)
    except _PUBLISH_FAILURES:
        log.warning(
            "could not publish %s for job %s (%s); schedulers see it on their next refresh",
            event.routing_key,
            job_id,
            change,
            exc_info=True,
        )


async def publish_manual_run(
    bus: Bus, job_id: uuid.UUID, idempotency_key: str | None = None
) -> uuid.UUID:
    """Ask for a run of the job now; returns the run id the run-coordinator will use."""
    run_id = manual_run_id(job_id, idempotency_key)
    event = JobDue(job_definition_id=job_id, run_id=run_id, trigger=Trigger.MANUAL)
    await _publish_or_503(bus, event, "run request")
    return run_id


async def publish_cancel(bus: Bus, run_id: uuid.UUID) -> None:
    """Ask the run-coordinator to cancel a run."""
    await _publish_or_503(bus, RunCancelRequested(run_id=run_id), "cancel request")
