"""Settings read from `ORC_*` environment variables, the same names in every component."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the engine. Each field's description feeds the README's settings table."""

    model_config = SettingsConfigDict(env_prefix="ORC_", extra="ignore", frozen=True)

    database_url: str = Field(
        default="sqlite+aiosqlite:///.orc/orc.db",
        description="SQLAlchemy URL of the state store: `sqlite+aiosqlite:///path` "
        "(embedded default) or `postgresql+asyncpg://user:pw@host/db`.",
    )
    broker_url: str = Field(
        default="amqp://guest:guest@localhost:5672/",
        description="AMQP URL of the RabbitMQ broker.",
    )
    namespace: str = Field(
        default="orc",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Prefix of every exchange and queue, so deployments and test runs "
        "can share one broker.",
    )
    staging_url: str = Field(
        default=".orc/staging",
        description="Where extracted data is staged as Parquet: a local folder or any URI "
        "`pyarrow.fs` opens (`s3://bucket/prefix`).",
    )
    data_root: Path = Field(
        default=Path("data"),
        description="The folder every file path in a job config must lie in (after "
        "resolving `..` and symlinks).",
    )
    api_host: str = Field(default="127.0.0.1", description="Address the REST API listens on.")
    api_port: int = Field(default=8000, description="Port the REST API listens on.")
    admin_token: SecretStr | None = Field(
        default=None,
        description="A bearer token the API registers as an `admin` token when it starts "
        "(only its SHA-256 digest is stored), for automation. Unset: no token is seeded.",
    )
    api_url: str | None = Field(
        default=None,
        description="Where the `orc` CLI finds the REST API. Unset: "
        "`http://ORC_API_HOST:ORC_API_PORT`.",
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="The bearer token the `orc` CLI sends. Unset: `ORC_ADMIN_TOKEN`, else the "
        "token saved in `ORC_TOKEN_FILE` by `orc up`.",
    )
    token_file: Path = Field(
        default=Path(".orc/token"),
        description="Where `orc up` saves the admin token it makes when none is configured "
        "(mode 0600), and where the CLI reads it.",
    )
    api_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest request body the REST API accepts; a bigger one is answered 413.",
    )
    api_open_docs: bool = Field(
        default=False,
        description="Serve the OpenAPI document and Swagger UI (`/schema`) without a token. "
        "Off: they need a token of any role, like every endpoint but `/health`.",
    )
    prefetch: int = Field(
        default=100,
        ge=1,
        description="Messages the coordinator may hold unacknowledged (its batch ceiling).",
    )
    scheduler_refresh_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the scheduler re-reads job definitions even without a "
        "`JobDefinitionChanged` event.",
    )

    heartbeat_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often workers send `WorkerHeartbeat`; the coordinator checks for "
        "lost workers at the same pace.",
    )
    lost_after_heartbeats: int = Field(
        default=3,
        ge=2,
        description="A worker not heard of for this many heartbeat intervals is LOST, and "
        "its running tasks are dispatched again as a new attempt.",
    )
    worker_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM a worker takes no new task and lets running ones finish for "
        "this long; the rest go back to their queue.",
    )
    worker_prefetch_per_slot: int = Field(
        default=4,
        ge=1,
        description="Task messages a worker holds per queue, per task it runs at once "
        "(`--concurrency`). Beyond 1 a slot whose attempt finished is reused while that "
        "attempt's outcome awaits the broker's confirm (a quarter more small runs a second); "
        "held messages never wait behind long tasks: see `ORC_WORKER_LONG_TASK_SECONDS`.",
    )
    worker_long_task_seconds: float = Field(
        default=1.0,
        gt=0,
        description="An attempt running this long is long. While every slot of a worker "
        "runs a long one, the worker takes no new message and passes those it holds on to "
        "the tail of their queue, for an idle worker to take.",
    )
    long_task_ack_seconds: float = Field(
        default=600.0,
        gt=0,
        description="A task still running after this long has its message acked early, so "
        "RabbitMQ's `consumer_timeout` (30 min by default) never redelivers it to a second "
        "worker; from then on the worker's heartbeats vouch for it. Keep it well under "
        "`consumer_timeout`.",
    )
    start_report_seconds: float = Field(
        default=0.2,
        ge=0,
        description="A worker reports an attempt's start (`TaskStarted`, the task shows "
        "RUNNING) once it has run this long; a shorter attempt reports its start with its "
        "outcome, one message instead of two. 0 reports every start at once.",
    )
    load_after_extract: bool = Field(
        default=True,
        description="An extract is dispatched with its load, and a worker that takes both "
        "runs the load right after an extract whose result rides inline "
        "(`ORC_STAGING_INLINE_BYTES`), reporting both in one message: a small run takes "
        "two coordinator steps instead of three. Off: every load is dispatched on its own.",
    )
    outbox_relay_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Events the coordinator committed but could not publish (a broker "
        "outage, a crash) are sent again after this long.",
    )

    http_allowlist: str = Field(
        default="",
        description="Comma-separated hosts and CIDRs (`127.0.0.1,10.0.0.0/8,api.internal`) "
        "the `http` extractor may reach although they are private, loopback or link-local.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Fernet key that encrypts secret config values on the bus (several "
        "comma-separated: the first encrypts, all decrypt). Unset: `secret_key_file` is "
        "used. Every component of a deployment needs the same key.",
    )
    secret_key_file: Path = Field(
        default=Path(".orc/secret.key"),
        description="Where the generated key is kept when `ORC_SECRET_KEY` is unset "
        "(made on first use, mode 0600): fine for `orc up` on one machine.",
    )
    staging_retention_hours: float = Field(
        default=24.0,
        gt=0,
        description="How long the staged files of a run are kept before the cleanup removes them.",
    )
    staging_inline_bytes: int = Field(
        default=16_384,
        ge=0,
        le=1_048_576,
        description="An extract whose result serialises to at most this many bytes (Arrow "
        "IPC) sends it inside its event instead of staging files; 0 always stages files.",
    )

    metrics_port: int | None = Field(
        default=None,
        description="Port of the `/metrics`, `/healthz` and `/readyz` endpoint of a "
        "component process (off when unset; the API also serves `/metrics` on its own port).",
    )
    metrics_host: str = Field(default="0.0.0.0", description="Address of that endpoint.")
    log_format: str = Field(
        default="text", pattern="^(text|json)$", description="`text` or `json` log lines."
    )
    log_level: str = Field(default="INFO", description="Lowest level logged.")
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        default="auto",
        description="The event loop of `orc` processes: `uvloop` (about a tenth less CPU "
        "per task for a worker, a few percent for the coordinator), the standard "
        "`asyncio` one, or `auto`: uvloop where it is installed (Linux, macOS), asyncio "
        "elsewhere.",
    )

    @property
    def resolved_data_root(self) -> Path:
        return self.data_root.expanduser().resolve()
