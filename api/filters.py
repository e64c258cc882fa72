"""The query filters of run lists (`GET /job_runs`, `GET /jobs/{id}/runs`) as one dependency."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from litestar.exceptions import ValidationException
from litestar.params import QueryParameter
from sqlalchemy import Select

from common.db.models import JobRun
from common.states import RunStatus, Trigger


@dataclass(frozen=True)
class RunFilter:
    status: RunStatus | None = None
    trigger: Trigger | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def apply(self, statement: Select[JobRun]) -> Select[JobRun]:
        if self.status is not None:
            statement = statement.where(JobRun.status == self.status)
        if self.trigger is not None:
            statement = statement.where(JobRun.trigger == self.trigger)
        if self.created_after is not None:
            statement = statement.where(JobRun.created_at >= self.created_after)
        if self.created_before is not None:
            statement = statement.where(JobRun.created_at < self.created_before)
        return statement


def _utc(name: str, value: datetime | None) -> datetime | None:
    """An aware UTC time; a time without an offset is read as UTC."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:
        raise ValidationException(
            detail="Validation failed",
            extra=[{"key": name, "message": "out of range", "source": "query"}],
        ) from exc


def provide_run_filter(
    status: Annotated[
        RunStatus | None, QueryParameter(description="Only runs in this status.")
    ] = None,
    trigger: Annotated[Trigger | None, QueryParameter(description="Only runs started so.")] = None,
    created_after: Annotated[
        datetime | None,
        QueryParameter(
            description="Only runs created at or after this time (ISO 8601; no offset: UTC)."
        ),
    ] = None,
    created_before: Annotated[
        datetime | None,
        QueryParameter(
            description="Only runs created before this time (ISO 8601; no offset: UTC)."
        ),
    ] = None,
) -> RunFilter:
    return RunFilter(
        status=status,
        trigger=trigger,
        created_after=_utc("created_after", created_after),
        created_before=_utc("created_before", created_before),
    )
