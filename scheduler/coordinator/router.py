"""Maps a routing key to the event model and handler that deal with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from common.errors import PoisonMessage
from common.events import (
    Event,
    JobDue,
    JobsDue,
    RunCancelRequested,
    TaskFailed,
    TaskOutcomes,
    TaskStarted,
    TaskSucceeded,
    WorkerHeartbeat,
    unfolded,
)
from common.parsing import parse_event
from scheduler.coordinator import handlers, workers
from scheduler.coordinator.uow import UnitOfWork

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class Route(Generic[E]):
    model: type[E]
    handler: Callable[[E, UnitOfWork, str | None], None]

    def handle(self, event: Event, uow: UnitOfWork, message_id: str | None) -> None:
        assert isinstance(event, self.model)
        self.handler(event, uow, message_id)


def _ignore_id(
    handler: Callable[[E, UnitOfWork], None],
) -> Callable[[E, UnitOfWork, str | None], None]:
    def call(event: E, uow: UnitOfWork, _: str | None) -> None:
        handler(event, uow)

    return call


ROUTES: dict[str, Route[Any]] = {
    JobDue.routing_key: Route(JobDue, handlers.on_job_due),
    TaskStarted.routing_key: Route(TaskStarted, _ignore_id(handlers.on_task_started)),
    TaskSucceeded.routing_key: Route(TaskSucceeded, _ignore_id(handlers.on_task_succeeded)),
    TaskFailed.routing_key: Route(TaskFailed, _ignore_id(handlers.on_task_failed)),
    RunCancelRequested.routing_key: Route(
        RunCancelRequested, _ignore_id(handlers.on_cancel_requested)
    ),
    WorkerHeartbeat.routing_key: Route(WorkerHeartbeat, _ignore_id(workers.on_heartbeat)),
}

CARRIERS: dict[str, type[Event]] = {m.routing_key: m for m in (JobsDue, TaskOutcomes)}
"""Messages that carry several events, each handled as if it had come alone."""


def parse(routing_key: str, body: bytes) -> list[tuple[Event, Route[Any]]]:
    """The events a message carries (several for a `JobsDue` or a `TaskOutcomes`), each
    with its route.

    Raises `PoisonMessage` for an unknown key or a body that is not the event."""
    carrier = CARRIERS.get(routing_key)
    if carrier is not None:
        carried = unfolded(parse_event(carrier, body))
        return [(event, ROUTES[event.routing_key]) for event in carried]
    route = ROUTES.get(routing_key)
    if route is None:
        raise PoisonMessage(f"the coordinator handles no routing key {routing_key!r}")
    return [(parse_event(route.model, body), route)]
