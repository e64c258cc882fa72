"""`GET /job_runs/{id}/events` and `GET /events`: live status as Server-Sent Events.

The streams are fed from the bus by the process's `LiveHub` (`api.live`). They read the
database only in short sessions of their own, never holding one open while they wait:
on SQLite an open transaction holds the one write lock.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter
from litestar.response import ServerSentEvent

from api.auth import SECURITY, allow
from api.credentials import Role
from api.dependencies import HubDep, PathId, SessionmakerDep
from api.errors import error_responses, not_found
from api.live import STREAM_DESCRIPTION, all_events, run_events
from common.db.models import JobRun

JobFilter = Annotated[uuid.UUID | None, QueryParameter(description="Only runs of this job.")]


class StreamController(Controller):
    path = "/"
    tags = ["live"]
    security = SECURITY
    guards = allow(Role.VIEWER)

    @get(
        "/job_runs/{run_id:uuid}/events",
        summary="Follow a run live",
        description="The run's snapshot, then its and its tasks' changes and progress as "
        "they happen; ends when the run finishes.\n\n" + STREAM_DESCRIPTION,
        responses=error_responses(404),
        media_type="text/event-stream",
        response_description="The run's events: snapshot, state, progress, finished (or error)",
    )
    async def run_stream(
        self, run_id: PathId, hub: HubDep, sessionmaker: SessionmakerDep
    ) -> ServerSentEvent:
        async with sessionmaker() as session:
            if await session.get(JobRun, run_id) is None:
                raise not_found("job run", run_id)
        return ServerSentEvent(run_events(hub, sessionmaker, run_id))

    @get(
        "/events",
        summary="Follow every run live",
        description="A snapshot of the runs in progress, then every run's and task's "
        "changes and progress; never ends by itself.\n\n" + STREAM_DESCRIPTION,
        responses=error_responses(),
        media_type="text/event-stream",
        response_description="Every run's events: snapshot, state, progress, finished, error",
    )
    async def all_streams(
        self, hub: HubDep, sessionmaker: SessionmakerDep, job_definition_id: JobFilter = None
    ) -> ServerSentEvent:
        return ServerSentEvent(all_events(hub, sessionmaker, job_definition_id))
