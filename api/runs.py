"""`/job_runs`: the runs the run-coordinator recorded, their tasks, and cancelling a run.

The API never writes runs: a cancel is a request (`RunCancelRequested`) the coordinator
carries out.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get, post
from litestar.params import QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import SECURITY, allow
from api.credentials import Role
from api.dependencies import BusDep, PageDep, PathId, RunFilterDep, SessionDep
from api.errors import Conflict, error_responses, not_found
from api.filters import RunFilter
from api.pagination import Pagination, paginate
from api.publishing import publish_cancel
from api.schemas import CancelAccepted, RunOut, RunPage, TaskOut, TaskPage
from common.db.models import JobRun, Task
from common.states import FINAL_RUN_STATUSES

JobFilter = Annotated[uuid.UUID | None, QueryParameter(description="Only runs of this job.")]


async def run_page(
    session: AsyncSession, page: Pagination, filters: RunFilter, job_id: uuid.UUID | None
) -> RunPage:
    """Runs matching the filters, newest first (by `created_at`)."""
    statement: Select[JobRun] = select(JobRun).order_by(JobRun.created_at.desc(), JobRun.id.desc())
    if job_id is not None:
        statement = statement.where(JobRun.job_definition_id == job_id)
    rows, total = await paginate(session, filters.apply(statement), page)
    return RunPage(
        items=[RunOut.model_validate(r) for r in rows],
        limit=page.limit,
        offset=page.offset,
        total=total,
    )


async def _get_run(session: AsyncSession, run_id: uuid.UUID) -> JobRun:
    run = await session.get(JobRun, run_id)
    if run is None:
        raise not_found("job run", run_id)
    return run


class RunController(Controller):
    path = "/job_runs"
    tags = ["runs"]
    security = SECURITY
    guards = allow(Role.VIEWER)

    @get("/", summary="List job runs", responses=error_responses())
    async def list_runs(
        self,
        session: SessionDep,
        page: PageDep,
        run_filter: RunFilterDep,
        job_definition_id: JobFilter = None,
    ) -> RunPage:
        """Runs, newest first (by `created_at`); the filters combine."""
        return await run_page(session, page, run_filter, job_definition_id)

    @get("/{run_id:uuid}", summary="Get a job run", responses=error_responses(404))
    async def get_run(self, run_id: PathId, session: SessionDep) -> RunOut:
        return RunOut.model_validate(await _get_run(session, run_id))

    @get("/{run_id:uuid}/tasks", summary="List the tasks of a run", responses=error_responses(404))
    async def list_run_tasks(self, run_id: PathId, session: SessionDep, page: PageDep) -> TaskPage:
        """The run's tasks in the order they were created (EXTRACT before LOAD)."""
        await _get_run(session, run_id)
        statement: Select[Task] = (
            select(Task).where(Task.job_run_id == run_id).order_by(Task.created_at, Task.id)
        )
        rows, total = await paginate(session, statement, page)
        return TaskPage(
            items=[TaskOut.model_validate(r) for r in rows],
            limit=page.limit,
            offset=page.offset,
            total=total,
        )

    @post(
        "/{run_id:uuid}/cancel",
        status_code=HTTP_202_ACCEPTED,
        summary="Cancel a run",
        guards=allow(Role.OPERATOR),
        responses=error_responses(403, 404, 409, 503),
    )
    async def cancel_run(self, run_id: PathId, session: SessionDep, bus: BusDep) -> CancelAccepted:
        """Ask the run-coordinator to cancel a PENDING or RUNNING run (`RunCancelRequested`).

        Answers at once (202); the run then ends CANCELLED, its unfinished tasks too, and
        workers stop the attempts they run. A run that has already finished is 409. Asking
        twice is harmless.
        """
        run = await _get_run(session, run_id)
        if run.status in FINAL_RUN_STATUSES:
            raise Conflict(detail=f"run {run_id} has already finished ({run.status.value})")
        accepted = CancelAccepted(
            id=run.id, job_definition_id=run.job_definition_id, status=run.status
        )
        await session.rollback()  # end the read before waiting on the broker
        await publish_cancel(bus, run_id)
        return accepted
