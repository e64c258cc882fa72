"""Settings read from `ORC_*` environment variables, the same names in every component."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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

    @property
    def resolved_data_root(self) -> Path:
        return self.data_root.expanduser().resolve()
