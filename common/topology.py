"""The bus topology, declared once: every exchange, queue and binding the engine uses.

Names derive from the namespace through the small functions below; infra files and
tests import them, and nothing else declares a queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.events import JobDue, TaskFailed, TaskStarted, TaskSucceeded
from common.states import TaskType

# A message redelivered this often (a worker dying on it each time) is dead-lettered by
# the broker itself: quorum queues have no delivery limit unless one is set.
DELIVERY_LIMIT = 10

REASON_HEADER = "x-orc-reason"
SOURCE_QUEUE_HEADER = "x-orc-queue"


def events_exchange(ns: str) -> str:
    return f"{ns}.events"


def dead_exchange(ns: str) -> str:
    return f"{ns}.dead"


def dead_queue(ns: str) -> str:
    return f"{ns}.dead"


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
    TaskStarted.routing_key,
    TaskSucceeded.routing_key,
    TaskFailed.routing_key,
)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    bindings: tuple[str, ...]
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Topology:
    namespace: str
    exchange: str
    dead_exchange: str
    dead_queue: str
    queues: tuple[QueueSpec, ...]

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


def topology(ns: str) -> Topology:
    args = work_queue_arguments(ns)
    return Topology(
        namespace=ns,
        exchange=events_exchange(ns),
        dead_exchange=dead_exchange(ns),
        dead_queue=dead_queue(ns),
        queues=(
            QueueSpec(coordinator_queue(ns), COORDINATOR_KEYS, args),
            *(QueueSpec(task_queue(ns, t), (task_routing_key(t),), args) for t in TaskType),
        ),
    )
