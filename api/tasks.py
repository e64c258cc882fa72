"""`/tasks/{id}`: one task as the run-coordinator recorded it. Read only."""

from __future__ import annotations

from litestar import Controller, get

from api.auth import SECURITY, allow
from api.credentials import Role
from api.dependencies import PathId, SessionDep
from api.errors import error_responses, not_found
from api.schemas import TaskOut
from common.db.models import Task


class TaskController(Controller):
    path = "/tasks"
    tags = ["tasks"]
    security = SECURITY
    guards = allow(Role.VIEWER)

    @get("/{task_id:uuid}", summary="Get a task", responses=error_responses(404))
    async def get_task(self, task_id: PathId, session: SessionDep) -> TaskOut:
        task = await session.get(Task, task_id)
        if task is None:
            raise not_found("task", task_id)
        return TaskOut.model_validate(task)
