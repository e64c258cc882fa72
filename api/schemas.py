"""Request and response bodies of the REST API (pydantic models, documented in OpenAPI)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from common.cron import InvalidSchedule, validate_schedule, validate_timezone
from common.states import RunStatus, TaskStatus, TaskType, Trigger

T = TypeVar("T")

JobName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
PluginName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class JobIn(BaseModel):
    """A job definition as a client sends it, to `POST /jobs` and (whole) to `PUT /jobs/{id}`.

    The plugin configs are checked against their plugin's config model by the handler,
    which knows the data root; everything else is checked here.
    """

    model_config = ConfigDict(extra="forbid")

    name: JobName = Field(description="Unique name of the job.")
    schedule: str | None = Field(
        default=None,
        description="Cron expression: 5 fields (minute first), or 6 with seconds first. "
        "Without one the job runs only when triggered.",
        examples=["*/5 * * * *"],
    )
    timezone: str = Field(
        default="UTC", description="IANA time zone the schedule is read in.", max_length=64
    )
    extractor_type: PluginName = Field(description="Registered extractor name, e.g. `csv`.")
    extractor_config: dict[str, Any] = Field(
        default_factory=dict, description="Config of the extractor, checked against its model."
    )
    loader_type: PluginName = Field(description="Registered loader name, e.g. `duckdb`.")
    loader_config: dict[str, Any] = Field(
        default_factory=dict, description="Config of the loader, checked against its model."
    )
    max_attempts: int = Field(default=3, ge=1, le=100, description="Attempts per task.")
    enabled: bool = Field(default=True, description="Whether the scheduler runs it on time.")

    @field_validator("schedule")
    @classmethod
    def _valid_cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_schedule(value)
        except InvalidSchedule as exc:
            raise PydanticCustomError("invalid_schedule", str(exc)) from exc

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            validate_timezone(value)
        except InvalidSchedule as exc:
            raise PydanticCustomError("invalid_timezone", str(exc)) from exc
        return value


class JobOut(BaseModel):
    """A stored job definition."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    schedule: str | None
    timezone: str
    extractor_type: str
    extractor_config: dict[str, Any]
    loader_type: str
    loader_config: dict[str, Any]
    max_attempts: int
    enabled: bool
    created_at: datetime
    updated_at: datetime


class RunAccepted(BaseModel):
    """A manual trigger was published; the run-coordinator records the run when it hears it."""

    id: uuid.UUID = Field(description="The id the run will have.")
    job_definition_id: uuid.UUID
    status: RunStatus = RunStatus.PENDING


class RunOut(BaseModel):
    """A job run as the run-coordinator recorded it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    job_definition_id: uuid.UUID
    status: RunStatus
    trigger: Trigger
    scheduled_for: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    error_message: str | None
    created_at: datetime


class TaskOut(BaseModel):
    """One task (EXTRACT or LOAD) of a run."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    job_run_id: uuid.UUID
    task_type: TaskType
    status: TaskStatus
    attempt_count: int
    max_attempts: int
    error_message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    worker_id: str | None
    rows_processed: int | None


class Page(BaseModel, Generic[T]):
    """One page of a list: `total` counts every match, `items` holds at most `limit`."""

    items: list[T]
    limit: int
    offset: int
    total: int


class JobPage(Page[JobOut]):
    pass


class RunPage(Page[RunOut]):
    pass


class TaskPage(Page[TaskOut]):
    pass


class Health(BaseModel):
    status: str = "ok"


class FieldError(BaseModel):
    """One problem with one input: `field` is a dotted path, e.g. `extractor_config.path`."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """The shape of every error answer."""

    status_code: int
    detail: str
    errors: list[FieldError] = Field(default_factory=list)
