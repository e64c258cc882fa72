"""`/jobs`: job definition CRUD and the manual trigger. The API's only writes are here."""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, post, put
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED
from sqlalchemy import Select, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.dependencies import BusDep, PageDep, PathId, SessionDep, SettingsDep
from api.errors import Conflict, error_responses, not_found
from api.pagination import paginate
from api.publishing import publish_change, publish_manual_run
from api.schemas import JobIn, JobOut, JobPage, RunAccepted
from api.validation import check_plugins
from common.db.models import JobDefinition
from common.events import utcnow

EnabledFilter = Annotated[bool | None, QueryParameter(description="Only enabled, or disabled.")]
NameFilter = Annotated[str | None, QueryParameter(description="Exact job name.")]


async def _get_job(session: AsyncSession, job_id: uuid.UUID) -> JobDefinition:
    job = await session.get(JobDefinition, job_id)
    if job is None:
        raise not_found("job", job_id)
    return job


async def _ensure_name_free(
    session: AsyncSession, name: str, own_id: uuid.UUID | None = None
) -> None:
    statement = select(JobDefinition.id).where(JobDefinition.name == name)
    if own_id is not None:
        statement = statement.where(JobDefinition.id != own_id)
    if (await session.scalar(statement)) is not None:
        raise _name_taken(name)


def _name_taken(name: str) -> Conflict:
    return Conflict(detail=f"a job named {name!r} already exists")


async def _commit(session: AsyncSession, name: str) -> None:
    # The unique index is the real guard: two requests may both pass the pre-check.
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise _name_taken(name) from exc


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]

    @post(
        "/",
        summary="Create a job definition",
        responses=error_responses(409, 422),
    )
    async def create_job(
        self, data: JSONBody[JobIn], session: SessionDep, bus: BusDep, settings: SettingsDep
    ) -> JobOut:
        """Store a job after checking its plugins and their configs; announces `created`.

        The configs are stored as sent (relative paths stay relative), once they validate.
        """
        check_plugins(data, settings.resolved_data_root)
        await _ensure_name_free(session, data.name)
        job = JobDefinition(**data.model_dump())
        session.add(job)
        await _commit(session, data.name)
        await publish_change(bus, job.id, "created")
        return JobOut.model_validate(job)

    @get("/", summary="List job definitions", responses=error_responses())
    async def list_jobs(
        self,
        session: SessionDep,
        page: PageDep,
        enabled: EnabledFilter = None,
        name: NameFilter = None,
    ) -> JobPage:
        """Job definitions ordered by name."""
        statement: Select[JobDefinition] = select(JobDefinition).order_by(JobDefinition.name)
        if enabled is not None:
            statement = statement.where(JobDefinition.enabled.is_(enabled))
        if name is not None:
            statement = statement.where(JobDefinition.name == name)
        rows, total = await paginate(session, statement, page)
        return JobPage(
            items=[JobOut.model_validate(r) for r in rows],
            limit=page.limit,
            offset=page.offset,
            total=total,
        )

    @get("/{job_id:uuid}", summary="Get a job definition", responses=error_responses(404))
    async def get_job(self, job_id: PathId, session: SessionDep) -> JobOut:
        return JobOut.model_validate(await _get_job(session, job_id))

    @put(
        "/{job_id:uuid}",
        summary="Replace a job definition",
        responses=error_responses(404, 409, 422),
    )
    async def replace_job(
        self,
        job_id: PathId,
        data: JSONBody[JobIn],
        session: SessionDep,
        bus: BusDep,
        settings: SettingsDep,
    ) -> JobOut:
        """Replace every field (an omitted optional field takes its default); announces
        `updated`. Runs already started keep the definition they started with."""
        job = await _get_job(session, job_id)
        check_plugins(data, settings.resolved_data_root)
        await _ensure_name_free(session, data.name, own_id=job_id)
        for field, value in data.model_dump().items():
            setattr(job, field, value)
        job.updated_at = utcnow()
        await _commit(session, data.name)
        await publish_change(bus, job_id, "updated")
        return JobOut.model_validate(job)

    @delete("/{job_id:uuid}", summary="Delete a job definition", responses=error_responses(404))
    async def delete_job(self, job_id: PathId, session: SessionDep, bus: BusDep) -> None:
        """Delete the job **with all its runs and their tasks** (the foreign keys cascade);
        announces `deleted`. A run in flight loses its records."""
        await _get_job(session, job_id)
        # A bulk DELETE leaves the cascade to the database, which removes rows the ORM
        # never loaded (SQLite enforces it through `PRAGMA foreign_keys=ON`).
        await session.execute(sql_delete(JobDefinition).where(JobDefinition.id == job_id))
        await session.commit()
        await publish_change(bus, job_id, "deleted")

    @post(
        "/{job_id:uuid}/run",
        status_code=HTTP_202_ACCEPTED,
        summary="Trigger a run now",
        responses=error_responses(404, 503),
    )
    async def run_job(self, job_id: PathId, session: SessionDep, bus: BusDep) -> RunAccepted:
        """Publish `JobDue` (trigger `manual`) with a fresh run id and answer at once.

        The run-coordinator records the run when it receives the event, so
        `GET /job_runs/{id}` may answer 404 for a moment. A disabled job can still be
        triggered by hand: `enabled` only governs the schedule.
        """
        await _get_job(session, job_id)
        await session.rollback()  # end the read before waiting on the broker
        run_id = await publish_manual_run(bus, job_id)
        return RunAccepted(id=run_id, job_definition_id=job_id)
