"""The `orc` CLI against an engine running in this process (API, coordinator, worker).

Commands run through typer's `CliRunner` in a worker thread, so the engine keeps serving
on the event loop meanwhile. Each command sees only the environment given here: the API's
URL, a token, the test's database, and a token file that does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result
from typer.testing import CliRunner

from common.settings import Settings
from orc.cli import app
from tests.e2e.test_api_flow import wait_healthy
from tests.harness import engine_running
from tests.integration.api.conftest import ADMIN_TOKEN, bearer, free_port, with_admin_token
from tests.integration.engine.test_flow import write_csv

ENV_NAMES = (
    "ORC_API_URL",
    "ORC_API_TOKEN",
    "ORC_ADMIN_TOKEN",
    "ORC_TOKEN_FILE",
    "ORC_DATABASE_URL",
    "ORC_API_HOST",
    "ORC_API_PORT",
)


@dataclass
class Cli:
    """Runs `orc …` against one engine."""

    settings: Settings
    base_url: str
    token_file: Path

    def env(self, token: str | None) -> dict[str, str | None]:
        env: dict[str, str | None] = dict.fromkeys(ENV_NAMES)
        env.update(
            ORC_API_URL=self.base_url,
            ORC_API_TOKEN=token,
            ORC_TOKEN_FILE=str(self.token_file),
            ORC_DATABASE_URL=self.settings.database_url,
        )
        return env

    async def __call__(self, *args: str, token: str | None = ADMIN_TOKEN) -> Result:
        runner = CliRunner()
        return await asyncio.to_thread(
            runner.invoke, app, list(args), env=self.env(token), catch_exceptions=False
        )

    async def json(self, *args: str, token: str | None = ADMIN_TOKEN) -> Any:
        result = await self(*args, "--output", "json", token=token)
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=bearer(ADMIN_TOKEN), timeout=30)


def one_error_line(result: Result) -> str:
    """The error a failed command printed: exactly one line on stderr, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@contextlib.asynccontextmanager
async def running(
    settings: Settings, tmp_path: Path, components: Sequence[str]
) -> AsyncIterator[Cli]:
    settings = with_admin_token(settings).model_copy(update={"api_port": free_port()})
    base = f"http://{settings.api_host}:{settings.api_port}"
    async with engine_running(settings, components):
        async with httpx.AsyncClient(base_url=base) as client:
            await wait_healthy(client)
        yield Cli(settings, base, tmp_path / "no-such-token-file")


@pytest.fixture
async def cli(sqlite_settings: Settings, tmp_path: Path, data_root: Path) -> AsyncIterator[Cli]:
    """An engine with every component (on SQLite), and a CLI pointed at it."""
    write_csv(data_root / "in" / "cities.csv", 321)
    async with running(sqlite_settings, tmp_path, ("api", "coordinator", "worker")) as c:
        yield c


@pytest.fixture
async def cli_without_worker(
    sqlite_settings: Settings, tmp_path: Path, data_root: Path
) -> AsyncIterator[Cli]:
    """An engine without a worker: its runs stay PENDING until cancelled."""
    write_csv(data_root / "in" / "cities.csv", 3)
    async with running(sqlite_settings, tmp_path, ("api", "coordinator")) as c:
        yield c


def write_job(folder: Path, name: str, suffix: str = ".yaml", **changes: Any) -> Path:
    """A job file: the CSV of the fixtures into DuckDB."""
    job: dict[str, Any] = {
        "name": name,
        "extractor_type": "csv",
        "extractor_config": {"path": "in/cities.csv"},
        "loader_type": "duckdb",
        "loader_config": {"database": f"out/{name}.duckdb", "table": "cities"},
        "max_attempts": 1,
    }
    job.update(changes)
    path = folder / f"{name}{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(job))
    else:
        lines = [f"{key}: {json.dumps(value)}" for key, value in job.items()]
        path.write_text("\n".join(lines) + "\n")
    return path
