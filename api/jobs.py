"""`/jobs`: job definition CRUD, a job's runs and the manual trigger. The API's only
writes to the state store (besides tokens) are here.

Deleting a job deletes its past runs and their tasks with it (the foreign keys cascade);
a job with a run in progress (PENDING or RUNNING) cannot be deleted (409): cancel the
run or let it finish first.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, delete, get, patch, post, put
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import Example
from litestar.params import Body, HeaderParameter, QueryParameter
from litestar.status_codes import HTTP_202_ACCEPTED
from pydantic import ValidationError
from sqlalchemy import Select, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth import SECURITY, allow
from api.credentials import Role
from api.dependencies import BusDep, PageDep, PathId, RunFilterDep, SessionDep, SettingsDep
from api.errors import Conflict, InvalidInput, error_responses, not_found
from api.masking import job_out, keep_secrets
from api.pagination import paginate
from api.publishing import publish_change, publish_manual_run
from api.runs import run_page
from api.schemas import FieldError, JobIn, JobOut, JobPage, JobPatch, RunAccepted, RunPage
from api.validation import check_plugins
from common.bus import Bus
from common.db.models import JobDefinition, JobRun
from common.events import utcnow
from common.settings import Settings
from common.states import RunStatus

EnabledFilter = Annotated[bool | None, QueryParameter(description="Only enabled, or disabled.")]
NameFilter = Annotated[str | None, QueryParameter(description="Exact job name.")]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Any string of yours: the same key for the same job names the same run, "
        "so a retried request starts one run, not two.",
    ),
]

IN_PROGRESS = (RunStatus.PENDING, RunStatus.RUNNING)

JOB_EXAMPLE = {
    "name": "nightly-sales",
    "schedule": "0 3 * * *",
    "timezone": "Europe/Berlin",
    "extractor_type": "csv",
    "extractor_config": {"path": "sales/latest.csv", "delimiter": ","},
    "loader_type": "duckdb",
    "loader_config": {"database": "warehouse.duckdb", "table": "sales", "mode": "append"},
    "max_attempts": 3,
    "retry_backoff_seconds": 10,
    "timeout_seconds": 3600,
}
JobBody = Annotated[
    JobIn,
    Body(
        media_type=RequestEncodingType.JSON,
        examples=[Example(summary="A CSV loaded into DuckDB every night", value=JOB_EXAMPLE)],
    ),
]
PatchBody = Annotated[
    JobPatch,
    Body(
        media_type=RequestEncodingType.JSON,
        examples=[
            Example(summary="Pause the schedule", value={"enabled": False}),
            Example(summary="Run hourly", value={"schedule": "0 * * * *"}),
        ],
    ),
]


async def _get_job(session: AsyncSession, job_id: uuid.UUID, lock: bool = False) -> JobDefinition:
    statement = select(JobDefinition).where(JobDefinition.id == job_id)
    if lock:
        statement = statement.with_for_update()
    job = (await session.scalars(statement)).one_or_none()
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


def _invalid(exc: ValidationError) -> InvalidInput:
    return InvalidInput(
        FieldError(field=".".join(str(p) for p in err["loc"]) or "body", message=err["msg"])
        for err in exc.errors(include_url=False)
    )


def _with_secrets_kept(data: JobIn, job: JobDefinition) -> JobIn:
    """`data` with the masked secrets (`***`) a client sent back replaced by the stored ones."""
    extractor_config = keep_secrets(
        "extractor", data.extractor_type, data.extractor_config,
        job.extractor_type, job.extractor_config,
    )  # fmt: skip
    loader_config = keep_secrets(
        "loader", data.loader_type, data.loader_config, job.loader_type, job.loader_config
    )
    return data.model_copy(
        update={"extractor_config": extractor_config, "loader_config": loader_config}
    )


def _store(job: JobDefinition, data: JobIn) -> None:
    for field, value in data.model_dump().items():
        setattr(job, field, value)
    job.updated_at = utcnow()


async def _update(
    session: AsyncSession, bus: Bus, settings: Settings, job: JobDefinition, data: JobIn
) -> None:
    """Check, store and announce a job's new definition (what PUT and PATCH share)."""
    check_plugins(data, settings.resolved_data_root)
    await _ensure_name_free(session, data.name, own_id=job.id)
    _store(job, data)
    await _commit(session, data.name)
    await publish_change(bus, job.id, "updated")


class JobController(Controller):
    path = "/jobs"
    tags = ["jobs"]
    security = SECURITY
    guards = allow(Role.VIEWER)

    @post(
        "/",
        summary="Create a job definition",
        guards=allow(Role.ADMIN),
        responses=error_responses(403, 409, 413, 422),
    )
    async def create_job(
        self, data: JobBody, session: SessionDep, bus: BusDep, settings: SettingsDep
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
        return job_out(job)

    @get("/", summary="List job definitions", responses=error_responses())
    async def list_jobs(
        self,
        session: SessionDep,
        page: PageDep,
        enabled: EnabledFilter = None,
        name: NameFilter = None,
    ) -> JobPage:
        """Job definitions, newest first (by `created_at`)."""
        statement: Select[JobDefinition] = select(JobDefinition).order_by(
            JobDefinition.created_at.desc(), JobDefinition.id.desc()
        )
        if enabled is not None:
            statement = statement.where(JobDefinition.enabled.is_(enabled))
        if name is not None:
            statement = statement.where(JobDefinition.name == name)
        rows, total = await paginate(session, statement, page)
        return JobPage(
            items=[job_out(r) for r in rows], limit=page.limit, offset=page.offset, total=total
        )

    @get("/{job_id:uuid}", summary="Get a job definition", responses=error_responses(404))
    async def get_job(self, job_id: PathId, session: SessionDep) -> JobOut:
        return job_out(await _get_job(session, job_id))

    @put(
        "/{job_id:uuid}",
        summary="Replace a job definition",
        guards=allow(Role.ADMIN),
        responses=error_responses(403, 404, 409, 413, 422),
    )
    async def replace_job(
        self,
        job_id: PathId,
        data: JobBody,
        session: SessionDep,
        bus: BusDep,
        settings: SettingsDep,
    ) -> JobOut:
        """Replace every field (an omitted optional field takes its default); announces
        `updated`. Runs already started keep the definition they started with. A secret
        sent back as `***` keeps its stored value."""
        job = await _get_job(session, job_id)
        await _update(session, bus, settings, job, _with_secrets_kept(data, job))
        return job_out(job)

    @patch(
        "/{job_id:uuid}",
        summary="Change some fields of a job definition",
        guards=allow(Role.ADMIN),
        responses=error_responses(403, 404, 409, 413, 422),
    )
    async def patch_job(
        self,
        job_id: PathId,
        data: PatchBody,
        session: SessionDep,
        bus: BusDep,
        settings: SettingsDep,
    ) -> JobOut:
        """Change the fields sent, keep the others (`{"enabled": false}` pauses a job's
        schedule); the job that results is checked like a new one. Announces `updated`."""
        job = await _get_job(session, job_id)
        changes = data.model_dump(exclude_unset=True)
        if not changes:
            return job_out(job)
        current = {name: getattr(job, name) for name in JobIn.model_fields}
        try:
            merged = _with_secrets_kept(JobIn.model_validate(current | changes), job)
        except ValidationError as exc:
            raise _invalid(exc) from exc
        await _update(session, bus, settings, job, merged)
        return job_out(job)

    @delete(
        "/{job_id:uuid}",
        summary="Delete a job definition and its runs",
        guards=allow(Role.ADMIN),
        responses=error_responses(403, 404, 409),
    )
    async def delete_job(self, job_id: PathId, session: SessionDep, bus: BusDep) -> None:
        """Delete the job **with all its runs and their tasks** (the foreign keys cascade);
        announces `deleted`. A job with a run in progress (PENDING or RUNNING) is 409."""
        # The row lock keeps the coordinator from recording a new run of the job (its
        # foreign key waits on the lock) between the check and the delete.
        await _get_job(session, job_id, lock=True)
        running = await session.scalar(
            select(JobRun.id)
            .where(JobRun.job_definition_id == job_id, JobRun.status.in_(IN_PROGRESS))
            .limit(1)
        )
        if running is not None:
            raise Conflict(
                detail=f"job {job_id} has a run in progress ({running}); "
                "cancel it or wait for it to finish"
            )
        # A bulk DELETE leaves the cascade to the database, which removes rows the ORM
        # never loaded (SQLite enforces it through `PRAGMA foreign_keys=ON`).
        await session.execute(sql_delete(JobDefinition).where(JobDefinition.id == job_id))
        await session.commit()
        await publish_change(bus, job_id, "deleted")

    @get("/{job_id:uuid}/runs", summary="List the runs of a job", responses=error_responses(404))
    async def list_job_runs(
        self, job_id: PathId, session: SessionDep, page: PageDep, run_filter: RunFilterDep
    ) -> RunPage:
        """The job's runs, newest first; the same filters as `GET /job_runs`."""
        await _get_job(session, job_id)
        return await run_page(session, page, run_filter, job_id)

    @post(
        "/{job_id:uuid}/run",
        status_code=HTTP_202_ACCEPTED,
        summary="Trigger a run now",
        guards=allow(Role.OPERATOR),
        responses=error_responses(403, 404, 503),
    )
    async def run_job(
        self,
        job_id: PathId,
        session: SessionDep,
        bus: BusDep,
        idempotency_key: IdempotencyKey = None,
    ) -> RunAccepted:
        """Publish `JobDue` (trigger `manual`) and answer at once.

        With an `Idempotency-Key` the run id is derived from the job and the key, so the
        same key again answers the same run id and the coordinator makes one run; without
        one every request is a new run. The run-coordinator records the run when it
        receives the event, so `GET /job_runs/{id}` may answer 404 for a moment. A
        disabled job can still be triggered by hand: `enabled` only governs the schedule.
        """
        await _get_job(session, job_id)
        await session.rollback()  # end the read before waiting on the broker
        run_id = await publish_manual_run(bus, job_id, idempotency_key)
        return RunAccepted(id=run_id, job_definition_id=job_id)
