"""`/workers`: the worker registry the run-coordinator keeps from heartbeats. Read only."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter
from sqlalchemy import Select, select

from api.auth import SECURITY, allow
from api.credentials import Role
from api.dependencies import PageDep, SessionDep
from api.errors import error_responses
from api.pagination import paginate
from api.schemas import WorkerOut, WorkerPage
from common.db.models import Worker
from common.states import WorkerStatus

StatusFilter = Annotated[
    WorkerStatus | None, QueryParameter(description="Only workers in this status.")
]


class WorkerController(Controller):
    path = "/workers"
    tags = ["workers"]
    security = SECURITY
    guards = allow(Role.VIEWER)

    @get("/", summary="List workers", responses=error_responses())
    async def list_workers(
        self, session: SessionDep, page: PageDep, status: StatusFilter = None
    ) -> WorkerPage:
        """Workers, the most recently heard of first (by `last_seen`)."""
        statement: Select[Worker] = select(Worker).order_by(Worker.last_seen.desc(), Worker.id)
        if status is not None:
            statement = statement.where(Worker.status == status)
        rows, total = await paginate(session, statement, page)
        return WorkerPage(
            items=[WorkerOut.model_validate(r) for r in rows],
            limit=page.limit,
            offset=page.offset,
            total=total,
        )
