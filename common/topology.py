"""The bus topology, declared once: every exchange, queue and binding the engine uses.

Names derive from the namespace through the small functions below; infra files and
tests import them, and nothing else declares a queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.events import (
    JobDue,
    JobsDue,
    RunCancelRequested,
    TaskFailed,
    TaskOutcomes,
    TaskStarted,
    TaskSucceeded,
    WorkerHeartbeat,
)
from common.states import TaskType

# A message redelivered this often (a worker dying on it each time) is dead-lettered by
# the broker itself: quorum queues have no delivery limit unless one is set.
DELIVERY_LIMIT = 5

# The retry ladder: one delay queue per rung, each with its own TTL. A per-message TTL on
# one queue would not do: RabbitMQ expires messages only from a queue's head, so a short
# delay would wait behind a long one.
DELAY_LADDER_SECONDS: tuple[int, ...] = (1, 5, 30, 120, 600, 3600)
# Not `x-…`: RabbitMQ's headers exchange ignores binding arguments that start with `x-`
# (under `x-match: all`), which would make every rung match every message.
DELAY_HEADER = "orc-delay"

DEAD_QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}

REASON_HEADER = "x-orc-reason"
SOURCE_QUEUE_HEADER = "x-orc-queue"


def events_exchange(ns: str) -> str:
    return f"{ns}.events"


def dead_exchange(ns: str) -> str:
    return f"{ns}.dead"


def dead_queue(ns: str) -> str:
    return f"{ns}.dead"


def dead_watch_queue(ns: str) -> str:
    """The coordinator's copy of every dead letter, to fail the task it belonged to."""
    return f"{ns}.dead.watch"


def delay_exchange(ns: str) -> str:
    return f"{ns}.delay"


def delay_queue(ns: str, seconds: int) -> str:
    return f"{ns}.delay.{rung_name(seconds)}"


def rung_name(seconds: int) -> str:
    return f"{seconds}s"


def pick_rung(delay_seconds: float) -> int:
    """The shortest rung at least as long as the wanted delay (the longest if none is)."""
    for rung in DELAY_LADDER_SECONDS:
        if rung >= delay_seconds:
            return rung
    return DELAY_LADDER_SECONDS[-1]


def coordinator_queue(ns: str) -> str:
    return f"{ns}.coordinator"


def task_queue(ns: str, task_type: TaskType | str) -> str:
    suffix = task_type.queue_suffix if isinstance(task_type, TaskType) else task_type
    return f"{ns}.tasks.{suffix}"


def task_routing_key(task_type: TaskType | str) -> str:
    suffix = task_type.queue_suffix if isinstance(task_type, TaskType) else task_type
    return f"task.{suffix}"


COORDINATOR_KEYS = (
    JobDue.routing_key,
    JobsDue.routing_key,
    TaskStarted.routing_key,
    TaskSucceeded.routing_key,
    TaskFailed.routing_key,
    TaskOutcomes.routing_key,
    RunCancelRequested.routing_key,
    WorkerHeartbeat.routing_key,
)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[str, ...]
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DelayRung:
    seconds: int
    queue: str
    arguments: dict[str, Any]

    @property
    def match(self) -> dict[str, Any]:
        """Header binding of the rung's queue on the delay exchange."""
        return {"x-match": "all", DELAY_HEADER: rung_name(self.seconds)}


@dataclass(frozen=True)
class Topology:
    namespace: str
    exchange: str
    dead_exchange: str
    dead_queue: str
    dead_watch_queue: str
    delay_exchange: str
    queues: tuple[QueueSpec, ...]
    delays: tuple[DelayRung, ...]

    def all_queues(self) -> tuple[str, ...]:
        """Every durable queue of the namespace (for tooling and test clean-up)."""
        return (
            *(q.name for q in self.queues),
            *(r.queue for r in self.delays),
            self.dead_queue,
            self.dead_watch_queue,
        )

    def all_exchanges(self) -> tuple[str, ...]:
        return (self.exchange, self.dead_exchange, self.delay_exchange)

    def arguments(self, name: str) -> dict[str, Any]:
        """The declaration arguments of any queue of the namespace."""
        for q in self.queues:
            if q.name == name:
                return q.arguments
        for r in self.delays:
            if r.queue == name:
                return r.arguments
        if name in (self.dead_queue, self.dead_watch_queue):
            return dict(DEAD_QUEUE_ARGUMENTS)
        raise KeyError(name)

    def queue(self, name: str) -> QueueSpec:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)


def work_queue_arguments(ns: str) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": dead_exchange(ns),
    }


def delay_queue_arguments(ns: str, seconds: int) -> dict[str, Any]:
    # Expired messages go back to the events exchange under their own routing key, so a
    # delayed task lands in its work queue. Quorum dead-lettering is at-most-once unless
    # asked otherwise: at-least-once needs reject-publish overflow.
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": seconds * 1000,
        "x-dead-letter-exchange": events_exchange(ns),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def topology(ns: str) -> Topology:
    args = work_queue_arguments(ns)
    return Topology(
        namespace=ns,
        exchange=events_exchange(ns),
        dead_exchange=dead_exchange(ns),
        dead_queue=dead_queue(ns),
        dead_watch_queue=dead_watch_queue(ns),
        delay_exchange=delay_exchange(ns),
        queues=(
            QueueSpec(coordinator_queue(ns), COORDINATOR_KEYS, args),
            *(QueueSpec(task_queue(ns, t), (task_routing_key(t),), args) for t in TaskType),
        ),
        delays=tuple(
            DelayRung(s, delay_queue(ns, s), delay_queue_arguments(ns, s))
            for s in DELAY_LADDER_SECONDS
        ),
    )
