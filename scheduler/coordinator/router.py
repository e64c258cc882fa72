"""Maps a routing key to the event model and handler that deal with it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from common.events import Event, JobDue, TaskFailed, TaskStarted, TaskSucceeded
from common.parsing import parse_event
from scheduler.coordinator import handlers
from scheduler.coordinator.uow import UnitOfWork

Handler = Callable[[Event, UnitOfWork, str | None], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    model: type[Event]
    handler: Handler


async def _job_due(event: Event, uow: UnitOfWork, message_id: str | None) -> None:
    assert isinstance(event, JobDue)
    await handlers.on_job_due(event, uow, message_id)


async def _started(event: Event, uow: UnitOfWork, _: str | None) -> None:
    assert isinstance(event, TaskStarted)
    await handlers.on_task_started(event, uow)


async def _succeeded(event: Event, uow: UnitOfWork, _: str | None) -> None:
    assert isinstance(event, TaskSucceeded)
    await handlers.on_task_succeeded(event, uow)


async def _failed(event: Event, uow: UnitOfWork, _: str | None) -> None:
    assert isinstance(event, TaskFailed)
    await handlers.on_task_failed(event, uow)


ROUTES: dict[str, Route] = {
    JobDue.routing_key: Route(JobDue, _job_due),
    TaskStarted.routing_key: Route(TaskStarted, _started),
    TaskSucceeded.routing_key: Route(TaskSucceeded, _succeeded),
    TaskFailed.routing_key: Route(TaskFailed, _failed),
}


def parse(routing_key: str, body: bytes) -> tuple[Event, Route]:
    """Raises `PoisonMessage` for an unknown key or a body that is not the event."""
    route = ROUTES.get(routing_key)
    if route is None:
        from common.errors import PoisonMessage

        raise PoisonMessage(f"the coordinator handles no routing key {routing_key!r}")
    return parse_event(route.model, body), route
