"""The event contract: every message on the bus is one of these frozen, versioned models.

Records of data ride the bus only when they are a few kilobytes (`StagedData.inline`);
otherwise events carry ids and the URIs of staged files.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from common.ids import new_id
from common.states import RunStatus, TaskStatus, TaskType, Trigger, WorkerStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Fields every event carries. `routing_key` is where it is published on `<ns>.events`."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    routing_key: ClassVar[str]
    # Facts the engine cannot lose are published `mandatory`: if no queue takes them the
    # publish fails. Notices (progress, run finished, job changed) may have no listener.
    mandatory: ClassVar[bool] = True
    # The coordinator keeps what it emits in its outbox until the broker confirmed it, so
    # a crash or a broker outage after the commit loses nothing. Not worth it for the most
    # frequent notice (StateChanged): live views read a snapshot when they subscribe.
    outboxed: ClassVar[bool] = True

    event_id: uuid.UUID = Field(default_factory=new_id)
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    version: Literal[1] = 1


class JobDue(Event):
    """A job should run now. Published by the scheduler, the API, or any outside program.

    `run_id` makes the trigger idempotent: the same id twice makes one run. Outside
    publishers may leave it out; the coordinator then derives it from `event_id` (or the
    AMQP `message_id`), so a redelivery of the same message is still one run.
    """

    routing_key: ClassVar[str] = "job.due"
    job_definition_id: uuid.UUID
    run_id: uuid.UUID | None = None
    trigger: Trigger = Trigger.EVENT
    scheduled_for: AwareDatetime | None = None


MAX_JOBS_DUE = 1000
"""The most runs one `JobsDue` may ask for: a message stays well under a megabyte."""


class DueRun(BaseModel):
    """One run a `JobsDue` asks for: a `JobDue` without the envelope."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    job_definition_id: uuid.UUID
    run_id: uuid.UUID
    scheduled_for: AwareDatetime | None = None


class JobsDue(Event):
    """Several jobs due at once, each run as a `JobDue` of its own would start it.

    The scheduler sends a tick's runs this way, up to `MAX_JOBS_DUE` a message: a broker
    on two cores takes about 4,000 persistent messages a second, so 10,000 jobs due on
    the same minute took 2.5 s as single `JobDue`s and take a few hundredths as these.
    A run id is required here, since the message's id cannot tell the runs apart.
    """

    routing_key: ClassVar[str] = "jobs.due"
    trigger: Trigger = Trigger.SCHEDULE
    runs: tuple[DueRun, ...] = Field(min_length=1, max_length=MAX_JOBS_DUE)

    def each(self) -> list[JobDue]:
        """One `JobDue` per run, as the coordinator handles them."""
        return [
            JobDue(
                event_id=run.run_id,
                occurred_at=self.occurred_at,
                job_definition_id=run.job_definition_id,
                run_id=run.run_id,
                trigger=self.trigger,
                scheduled_for=run.scheduled_for,
            )
            for run in self.runs
        ]


class StagedData(BaseModel):
    """Where an extract left its rows: Parquet files under the staging location, or for a
    result of a few kilobytes (`ORC_STAGING_INLINE_BYTES`) the rows themselves, which
    saves the files' round trip to the staging store."""

    model_config = ConfigDict(frozen=True)
    uri: str
    files: tuple[str, ...]
    rows: int
    columns: dict[str, str] = Field(default_factory=dict, description="name → Arrow type")
    inline: str | None = Field(
        default=None,
        description="A small result itself (base64 of an Arrow IPC stream), instead of files",
    )


class LoadOrder(BaseModel):
    """The first attempt of a run's load, riding in its extract's dispatch."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    task_id: uuid.UUID
    plugin: str
    config: dict[str, Any]
    timeout_seconds: float | None = None


class LoadResult(BaseModel):
    """How the load that rode in an extract's dispatch ended (its first attempt)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    task_id: uuid.UUID
    started_at: AwareDatetime
    worker_id: str
    rows: int = 0
    error: str | None = Field(default=None, description="Set when the load failed.")
    retryable: bool = True

    @classmethod
    def of(
        cls, outcome: TaskSucceeded | TaskFailed, started_at: datetime, worker_id: str
    ) -> LoadResult:
        result = cls(task_id=outcome.task_id, started_at=started_at, worker_id=worker_id)
        if isinstance(outcome, TaskFailed):
            return result.model_copy(
                update={"error": outcome.error, "retryable": outcome.retryable}
            )
        return result.model_copy(update={"rows": outcome.rows})

    def outcome(self, run_id: uuid.UUID) -> TaskSucceeded | TaskFailed:
        """The load's first attempt as the outcome it would have sent on its own."""
        common: dict[str, Any] = {
            "task_id": self.task_id,
            "run_id": run_id,
            "attempt": 1,
            "started_at": self.started_at,
            "worker_id": self.worker_id,
        }
        if self.error is None:
            return TaskSucceeded(rows=self.rows, **common)
        return TaskFailed(error=self.error, retryable=self.retryable, **common)


class TaskDispatched(Event):
    """An order to a worker: run this attempt of this task.

    Published with the routing key of its task queue (`topology.task_routing_key`), not
    with `routing_key`, which names it in the contract.
    """

    routing_key: ClassVar[str] = "task.dispatched"
    task_id: uuid.UUID
    run_id: uuid.UUID
    job_definition_id: uuid.UUID
    task_type: TaskType
    attempt: int = Field(ge=1)
    plugin: str
    config: dict[str, Any]
    staged: StagedData | None = None
    state: dict[str, Any] = Field(
        default_factory=dict,
        description="What the job kept from earlier runs (an incremental extract's cursor).",
    )
    timeout_seconds: float | None = None
    then: LoadOrder | None = Field(
        default=None,
        description="For an extract: its run's load, which a worker that also takes load "
        "tasks runs right after it when the extract's result rides inline "
        "(`StagedData.inline`), reporting both outcomes in one `TaskSucceeded` (`load`). "
        "Any other worker leaves it: the coordinator then dispatches the load on its own.",
    )

    def load_order(self, staged: StagedData) -> TaskDispatched:
        """The load that rode in this extract's dispatch, as its own dispatch would be."""
        if self.then is None:
            raise ValueError("this dispatch carries no load")
        return TaskDispatched(
            task_id=self.then.task_id,
            run_id=self.run_id,
            job_definition_id=self.job_definition_id,
            task_type=TaskType.LOAD,
            attempt=1,
            plugin=self.then.plugin,
            config=self.then.config,
            staged=staged,
            timeout_seconds=self.then.timeout_seconds,
        )


class TaskStarted(Event):
    """An attempt runs. Sent only once it has run for `ORC_START_REPORT_SECONDS`: a
    shorter attempt reports its start inside its outcome (`started_at`, `worker_id`), and
    the coordinator records both transitions from that one message."""

    routing_key: ClassVar[str] = "task.started"
    task_id: uuid.UUID
    run_id: uuid.UUID
    attempt: int
    worker_id: str


class TaskProgress(Event):
    routing_key: ClassVar[str] = "task.progress"
    mandatory: ClassVar[bool] = False
    task_id: uuid.UUID
    run_id: uuid.UUID
    attempt: int
    rows: int


class TaskOutcome(Event):
    """What ends an attempt (`TaskSucceeded`, `TaskFailed`), with the attempt's start when
    it was too short to report it on its own (`TaskStarted`)."""

    task_id: uuid.UUID
    run_id: uuid.UUID
    attempt: int
    started_at: AwareDatetime | None = Field(
        default=None, description="Set when no `TaskStarted` was sent (a short attempt)."
    )
    worker_id: str | None = None


class TaskSucceeded(TaskOutcome):
    routing_key: ClassVar[str] = "task.succeeded"
    rows: int = 0
    staged: StagedData | None = None
    state_update: dict[str, Any] | None = Field(
        default=None,
        description="Keys to store in the job's state once the run completes.",
    )

    load: LoadResult | None = Field(
        default=None,
        description="For an extract whose dispatch carried its load (`then`): the outcome "
        "of that load, run by the same worker right after it.",
    )


class TaskFailed(TaskOutcome):
    routing_key: ClassVar[str] = "task.failed"
    error: str
    retryable: bool = True


MAX_OUTCOMES = 32
"""The most outcomes one `TaskOutcomes` carries (each may hold an inline result of up to
`ORC_STAGING_INLINE_BYTES`)."""


class TaskOutcomes(Event):
    """Outcomes of attempts one worker finished while its previous outcome awaited the
    broker's confirm, in one message: each counts as if it had come alone.

    A busy worker of small tasks sends a message per several tasks instead of one per
    task (a third of a run's messages); an idle one sends each outcome on its own, as
    `TaskSucceeded` or `TaskFailed`, with no wait.
    """

    routing_key: ClassVar[str] = "task.outcomes"
    succeeded: tuple[TaskSucceeded, ...] = ()
    failed: tuple[TaskFailed, ...] = ()

    @model_validator(mode="after")
    def _some(self) -> TaskOutcomes:
        count = len(self.succeeded) + len(self.failed)
        if not 1 <= count <= MAX_OUTCOMES:
            raise ValueError(f"carries {count} outcomes; 1 to {MAX_OUTCOMES} allowed")
        return self

    @classmethod
    def of(cls, outcomes: list[TaskSucceeded | TaskFailed]) -> TaskOutcomes:
        return cls(
            succeeded=tuple(o for o in outcomes if isinstance(o, TaskSucceeded)),
            failed=tuple(o for o in outcomes if isinstance(o, TaskFailed)),
        )

    def each(self) -> list[TaskSucceeded | TaskFailed]:
        return [*self.succeeded, *self.failed]


class RunFinished(Event):
    routing_key: ClassVar[str] = "run.finished"
    mandatory: ClassVar[bool] = False
    run_id: uuid.UUID
    job_definition_id: uuid.UUID
    status: RunStatus
    error_message: str | None = None


class JobDefinitionChanged(Event):
    routing_key: ClassVar[str] = "job.changed"
    mandatory: ClassVar[bool] = False
    job_definition_id: uuid.UUID
    change: Literal["created", "updated", "deleted"]


class RunCancelRequested(Event):
    """Someone asked to cancel a run (`POST /job_runs/{id}/cancel`); the coordinator decides."""

    routing_key: ClassVar[str] = "run.cancel"
    run_id: uuid.UUID
    reason: str = "cancelled by request"


class RunCancelled(Event):
    """A run was cancelled: workers interrupt any attempt of it they are running."""

    routing_key: ClassVar[str] = "run.cancelled"
    mandatory: ClassVar[bool] = False
    run_id: uuid.UUID


class RunningAttempt(BaseModel):
    model_config = ConfigDict(frozen=True)
    task_id: uuid.UUID
    run_id: uuid.UUID
    attempt: int


class WorkerHeartbeat(Event):
    """A worker is alive (or, with status STOPPED, leaving); sent every few seconds."""

    routing_key: ClassVar[str] = "worker.heartbeat"
    worker_id: str
    host: str
    queues: tuple[str, ...]
    concurrency: int
    started_at: AwareDatetime
    status: WorkerStatus = WorkerStatus.ACTIVE
    running: tuple[RunningAttempt, ...] = ()
    interval_seconds: float = 5.0


class StateChanged(Event):
    """A run's or a task's new status, committed by the coordinator. Travels inside a
    `StateChanges` notice with the other changes of the same transaction.

    Live views (the API's event stream) follow runs through these; `task_id` is None
    when the run itself changed.
    """

    routing_key: ClassVar[str] = "state.changed"
    mandatory: ClassVar[bool] = False
    outboxed: ClassVar[bool] = False
    job_definition_id: uuid.UUID
    run_id: uuid.UUID
    run_status: RunStatus
    task_id: uuid.UUID | None = None
    task_type: TaskType | None = None
    task_status: TaskStatus | None = None
    attempt: int | None = None
    rows: int | None = None
    error_message: str | None = None


class StateChanges(Event):
    """The status changes one coordinator transaction committed, in the order they
    happened. One message per transaction rather than one per change: a short run makes
    nine changes, and sent one by one they were most of the bus's traffic."""

    routing_key: ClassVar[str] = "state.changes"
    mandatory: ClassVar[bool] = False
    outboxed: ClassVar[bool] = False
    changes: tuple[StateChanged, ...]


EVENT_TYPES: tuple[type[Event], ...] = (
    JobDue,
    JobsDue,
    TaskDispatched,
    TaskStarted,
    TaskProgress,
    TaskSucceeded,
    TaskFailed,
    TaskOutcomes,
    RunFinished,
    JobDefinitionChanged,
    RunCancelRequested,
    RunCancelled,
    WorkerHeartbeat,
    StateChanges,
)
EVENTS_BY_ROUTING_KEY: dict[str, type[Event]] = {e.routing_key: e for e in EVENT_TYPES}


def unfolded(event: Event) -> tuple[Event, ...]:
    """The events one message stands for: those a batch carries (`StateChanges`,
    `JobsDue`, `TaskOutcomes`) one by one, any other event as itself."""
    if isinstance(event, StateChanges):
        return event.changes
    if isinstance(event, JobsDue | TaskOutcomes):
        return tuple(event.each())
    return (event,)
