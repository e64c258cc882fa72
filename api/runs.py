"""`/job_runs`: the runs the run-coordinator recorded, and their tasks. Read only."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter
from sqlalchemy import Select, select

from api.dependencies import PageDep, PathId, SessionDep
from api.errors import error_responses, not_found
from api.pagination import paginate
from api.schemas import RunOut, RunPage, TaskOut, TaskPage
from common.db.models import JobRun, Task
from common.states import RunStatus, Trigger

JobFilter = Annotated[uuid.UUID | None, QueryParameter(description="Only runs of this job.")]
StatusFilter = Annotated[RunStatus | None, QueryParameter(description="Only runs in this status.")]
TriggerFilter = Annotated[Trigger | None, QueryParameter(description="Only runs started so.")]


class RunController(Controller):
    path = "/job_runs"
    tags = ["runs"]

    @get("/", summary="List job runs", responses=error_responses())
    async def list_runs(
        self,
        session: SessionDep,
        page: PageDep,
        job_definition_id: JobFilter = None,
        status: StatusFilter = None,
        trigger: TriggerFilter = None,
    ) -> RunPage:
        """Runs, newest first (by `created_at`)."""
        statement: Select[JobRun] = select(JobRun).order_by(
            JobRun.created_at.desc(), JobRun.id.desc()
        )
        if job_definition_id is not None:
            statement = statement.where(JobRun.job_definition_id == job_definition_id)
        if status is not None:
            statement = statement.where(JobRun.status == status)
        if trigger is not None:
            statement = statement.where(JobRun.trigger == trigger)
        rows, total = await paginate(session, statement, page)
        return RunPage(
            items=[RunOut.model_validate(r) for r in rows],
            limit=page.limit,
            offset=page.offset,
            total=total,
        )

    @get("/{run_id:uuid}", summary="Get a job run", responses=error_responses(404))
    async def get_run(self, run_id: PathId, session: SessionDep) -> RunOut:
        run = await session.get(JobRun, run_id)
        if run is None:
            raise not_found("job run", run_id)
        return RunOut.model_validate(run)

    @get("/{run_id:uuid}/tasks", summary="List the tasks of a run", responses=error_responses(404))
    async def list_run_tasks(self, run_id: PathId, session: SessionDep, page: PageDep) -> TaskPage:
        """The run's tasks in the order they were created (EXTRACT before LOAD)."""
        if await session.get(JobRun, run_id) is None:
            raise not_found("job run", run_id)
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
