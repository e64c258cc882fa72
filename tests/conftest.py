"""Shared fixtures: every test gets its own namespace on the real broker and its own
database, so runs (and tests) never see each other's messages or rows.

Real-service fixtures skip when the service is missing on a laptop, and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from common.bus import delete_namespace
from common.db.migrate import upgrade
from common.settings import Settings

BROKER_URL = os.environ.get("ORC_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN_DSN = os.environ.get("ORC_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ):
            return True
    except OSError:
        return False


def _require(url: str, port: int, what: str) -> None:
    if _reachable(url, port):
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is not reachable at {url} (CI requires it)")
    pytest.skip(f"{what} is not reachable at {url}")


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'orc.db'}"
    upgrade(url)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    _require(PG_ADMIN_DSN, 5432, "PostgreSQL")
    name = f"orc_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    parts = urlsplit(PG_ADMIN_DSN)
    url = f"postgresql+asyncpg://{parts.netloc}/{name}"
    upgrade(url)
    yield url
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs once per state store."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def broker_url() -> str:
    _require(BROKER_URL, 5672, "RabbitMQ")
    return BROKER_URL


@pytest.fixture
async def clean_namespace(broker_url: str, namespace: str) -> AsyncIterator[str]:
    """Yields the namespace; afterwards deletes its exchanges and queues from the broker."""
    yield namespace
    await delete_namespace(broker_url, namespace)


def engine_settings(
    database_url: str, namespace: str, broker_url: str, tmp_path: Path, data_root: Path
) -> Settings:
    """Settings for an engine under test: its files (staging, secret key, token) in the
    test's own folder, never in the working directory."""
    return Settings(
        database_url=database_url,
        broker_url=broker_url,
        namespace=namespace,
        staging_url=str(tmp_path / "staging"),
        data_root=data_root,
        secret_key_file=tmp_path / "secret.key",
        token_file=tmp_path / "token",
        # These tests observe every attempt's start on the bus; the lazy start report
        # (the default) has tests of its own (tests/integration/engine/test_start_report.py).
        start_report_seconds=0,
    )


@pytest.fixture
def settings(
    database_url: str, clean_namespace: str, broker_url: str, tmp_path: Path, data_root: Path
) -> Settings:
    """Settings for an engine under test, parametrized over both state stores."""
    return engine_settings(database_url, clean_namespace, broker_url, tmp_path, data_root)


@pytest.fixture
def sqlite_settings(
    sqlite_url: str, clean_namespace: str, broker_url: str, tmp_path: Path, data_root: Path
) -> Settings:
    """Settings on SQLite only, for tests whose subject is not the store."""
    return engine_settings(sqlite_url, clean_namespace, broker_url, tmp_path, data_root)
