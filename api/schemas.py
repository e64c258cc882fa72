"""Request and response bodies of the REST API (pydantic models, documented in OpenAPI)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from api.credentials import Role
from common.cron import InvalidSchedule, validate_schedule, validate_timezone
from common.states import RunStatus, TaskStatus, TaskType, Trigger, WorkerStatus

T = TypeVar("T")

JobName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
PluginName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]

WEEK_SECONDS = 7 * 24 * 3600.0


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def refuse_nul(value: T) -> T:
    """No NUL characters, anywhere in a value: PostgreSQL cannot store them in text or
    JSONB, and no job needs one."""
    if _has_nul(value):
        raise PydanticCustomError("nul_character", "must not contain a NUL character")
    return value


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
    retry_backoff_seconds: float = Field(
        default=5.0,
        gt=0,
        le=WEEK_SECONDS,
        allow_inf_nan=False,
        description="Wait after the first failed attempt, in seconds.",
    )
    retry_backoff_factor: float = Field(
        default=2.0,
        ge=1,
        le=100,
        allow_inf_nan=False,
        description="Each further wait is the previous one times this.",
    )
    retry_backoff_max_seconds: float = Field(
        default=3600.0,
        gt=0,
        le=WEEK_SECONDS,
        allow_inf_nan=False,
        description="No wait is longer than this.",
    )
    retry_jitter: float = Field(
        default=0.1,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="Each wait varies at random by up to this fraction, up or down.",
    )
    timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        le=WEEK_SECONDS,
        allow_inf_nan=False,
        description="An attempt running longer than this fails (and may be retried). "
        "None: no limit.",
    )
    enabled: bool = Field(default=True, description="Whether the scheduler runs it on time.")

    @field_validator("name", "extractor_type", "extractor_config", "loader_type", "loader_config")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return refuse_nul(value)

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


class JobPatch(BaseModel):
    """Fields to change in a job (`PATCH /jobs/{id}`); the fields left out keep their value.

    A config given replaces the stored config whole (it is not merged key by key); `null`
    clears `schedule` and `timeout_seconds`. The job that results is checked like a new one.
    """

    model_config = ConfigDict(extra="forbid")

    name: JobName | None = None
    schedule: str | None = None
    timezone: str | None = Field(default=None, max_length=64)
    extractor_type: PluginName | None = None
    extractor_config: dict[str, Any] | None = None
    loader_type: PluginName | None = None
    loader_config: dict[str, Any] | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    enabled: bool | None = None
    retry_backoff_seconds: float | None = Field(
        default=None, gt=0, le=WEEK_SECONDS, allow_inf_nan=False
    )
    retry_backoff_factor: float | None = Field(default=None, ge=1, le=100, allow_inf_nan=False)
    retry_backoff_max_seconds: float | None = Field(
        default=None, gt=0, le=WEEK_SECONDS, allow_inf_nan=False
    )
    retry_jitter: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    timeout_seconds: float | None = Field(default=None, gt=0, le=WEEK_SECONDS, allow_inf_nan=False)


class JobOut(BaseModel):
    """A stored job definition. Secret fields of the plugin configs read `***`."""

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
    retry_backoff_seconds: float
    retry_backoff_factor: float
    retry_backoff_max_seconds: float
    retry_jitter: float
    timeout_seconds: float | None
    enabled: bool
    created_at: datetime
    updated_at: datetime


class RunAccepted(BaseModel):
    """A manual trigger was published; the run-coordinator records the run when it hears it."""

    id: uuid.UUID = Field(description="The id the run will have.")
    job_definition_id: uuid.UUID
    status: RunStatus = RunStatus.PENDING


class CancelAccepted(BaseModel):
    """A cancel request was published; the run-coordinator cancels the run when it hears it
    (the run then ends CANCELLED, unless it finished first)."""

    id: uuid.UUID
    job_definition_id: uuid.UUID
    status: RunStatus = Field(description="The run's status when the request was made.")


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


class RunSnapshot(BaseModel):
    """A run and its tasks as stored now: the first event of a run's live stream."""

    run: RunOut
    tasks: list[TaskOut]


class ActiveRuns(BaseModel):
    """The runs in progress (PENDING or RUNNING) now: the first event of `GET /events`."""

    runs: list[RunSnapshot]


class WorkerOut(BaseModel):
    """A worker as its last heartbeat described it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    host: str
    queues: list[str]
    concurrency: int
    started_at: datetime
    last_seen: datetime
    status: WorkerStatus


class PluginOut(BaseModel):
    """An installed plugin and the JSON schema its config must match."""

    name: str
    kind: str = Field(description="`extractor` or `loader`.")
    config_schema: dict[str, Any]


class PluginCatalog(BaseModel):
    extractors: list[PluginOut]
    loaders: list[PluginOut]


class TokenIn(BaseModel):
    """A token to make: who it is for, and what it may do."""

    model_config = ConfigDict(extra="forbid")

    name: JobName = Field(description="Who or what uses the token, for humans.")
    role: Role

    @field_validator("name")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        return refuse_nul(value)


class TokenOut(BaseModel):
    """A token's record; the token itself is never shown again after it was made."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


class TokenCreated(TokenOut):
    token: str = Field(description="The bearer token. Shown this once; only its hash is kept.")


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


class WorkerPage(Page[WorkerOut]):
    pass


class TokenPage(Page[TokenOut]):
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
