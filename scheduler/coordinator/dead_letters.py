"""Dead letters about a task fail that task: a poison `TaskDispatched` (unparseable, or
delivered until the queue's delivery limit) must not leave its run hanging."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from common.db.models import JobRun, Task
from common.states import FINAL_RUN_STATUSES, FINAL_TASK_STATUSES, TaskType
from common.topology import REASON_HEADER, task_routing_key
from scheduler.coordinator.handlers import fail_attempt
from scheduler.coordinator.uow import UnitOfWork

log = logging.getLogger(__name__)

TASK_KEYS = frozenset(task_routing_key(t) for t in TaskType)


def dead_letter_reason(headers: Mapping[str, Any]) -> str:
    if REASON_HEADER in headers:
        return str(headers[REASON_HEADER])
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        reason = deaths[0].get("reason")
        queue = deaths[0].get("queue")
        if reason == "delivery_limit":
            return f"poison message: delivered too many times from {queue}"
        return f"dead-lettered from {queue}: {reason}"
    return "dead-lettered"


def _task_ref(body: bytes) -> tuple[uuid.UUID, uuid.UUID, int | None] | None:
    """(task id, run id, attempt) from a body that may not be a valid event any more."""
    try:
        data = json.loads(body)
        attempt = data.get("attempt")
        return (
            uuid.UUID(str(data["task_id"])),
            uuid.UUID(str(data["run_id"])),
            attempt if isinstance(attempt, int) else None,
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def on_dead_letter(
    body: bytes, routing_key: str, headers: Mapping[str, Any], uow: UnitOfWork
) -> None:
    if routing_key not in TASK_KEYS:
        return
    ref = _task_ref(body)
    if ref is None:
        return
    tid, run_id, attempt = ref
    task = uow.get(Task, tid)
    run = uow.get(JobRun, run_id)
    if task is None or run is None or task.job_run_id != run.id:
        return
    if task.status in FINAL_TASK_STATUSES or run.status in FINAL_RUN_STATUSES:
        return
    if attempt is not None and attempt != task.attempt_count:
        return
    reason = dead_letter_reason(headers)
    log.warning("task %s failed by dead letter: %s", tid, reason)
    fail_attempt(uow, run, task, reason, retryable=False)
