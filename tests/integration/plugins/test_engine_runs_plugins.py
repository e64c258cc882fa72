"""Plugins in a running engine: a third-party package found through its entry points,
and the built-ins driven through the REST API."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow.parquet as pq
import pytest

from common.bus import connect_bus
from common.events import JobDue, RunFinished
from common.settings import Settings
from common.states import RunStatus, Trigger
from plugins import registry
from tests.e2e.test_api_flow import free_port, wait_healthy
from tests.harness import engine_running, insert_job, tap
from tests.integration.api.conftest import ADMIN_TOKEN, bearer, with_admin_token
from tests.integration.plugins.conftest import sql
from tests.unit.plugins.httpserver import Request, Response, serve

PLUGIN_MODULE = '''
"""A third-party plugin package: what a user writes (docs/plugins.md shows it)."""

import json
from collections.abc import Iterable, Iterator

import pyarrow as pa
from pydantic import Field

from plugins.base import Extractor, Loader, PluginConfig
from plugins.paths import DataPath, ensure_inside


class CountConfig(PluginConfig):
    count: int = Field(ge=0, description="How many rows.")


class CountExtractor(Extractor[CountConfig]):
    config_model = CountConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch({"n": list(range(self.config.count))})


class JsonLinesConfig(PluginConfig):
    path: DataPath


class JsonLinesLoader(Loader[JsonLinesConfig]):
    config_model = JsonLinesConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        path = ensure_inside(self.config.path, self.context.data_root)
        rows = [row for batch in batches for row in batch.to_pylist()]
        path.write_text("".join(json.dumps(row) + "\\n" for row in rows))
        return len(rows)
'''

ENTRY_POINTS = """
[orc.extractors]
count = orc_count_plugin:CountExtractor

[orc.loaders]
jsonlines = orc_count_plugin:JsonLinesLoader
"""


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A distribution on sys.path as pip would leave it: the module and its dist-info."""
    site = tmp_path / "site"
    (site / "orc_count_plugin").mkdir(parents=True)
    (site / "orc_count_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    info = site / "orc_count_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: orc-count-plugin\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    registry.refresh()
    yield
    sys.modules.pop("orc_count_plugin", None)
    registry.refresh()


async def test_a_third_party_package_is_found_and_runs_a_job(
    installed_plugin: None, sqlite_settings: Settings, data_root: Path
) -> None:
    assert "count" in registry.extractors()
    assert "jsonlines" in registry.loaders()
    settings = sqlite_settings
    job = await insert_job(
        settings,
        name="counted",
        extractor_type="count",
        extractor_config={"count": 5},
        loader_type="jsonlines",
        loader_config={"path": "out.jsonl"},
        max_attempts=1,
    )
    run_id = uuid.uuid4()
    async with tap(settings) as t, engine_running(settings):
        bus = await connect_bus(settings.broker_url, settings.namespace)
        try:
            await bus.publish(
                JobDue(job_definition_id=job.id, run_id=run_id, trigger=Trigger.MANUAL)
            )
        finally:
            await bus.close()
        finished = await t.run_finished(run_id)
    assert finished.status is RunStatus.COMPLETED, finished.error_message
    lines = (data_root / "out.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"n": i} for i in range(5)]


def orders_api(request: Request) -> Response:
    page = int(request.query.get("page", "1"))
    data = {
        1: [{"id": 1, "item": "a", "qty": 2}, {"id": 2, "item": "b", "qty": 1}],
        2: [{"id": 1, "item": "a", "qty": 5}],
    }.get(page, [])
    return Response(json={"data": {"items": data}})


@pytest.mark.postgres
async def test_builtin_plugins_through_the_api(
    sqlite_settings: Settings,
    data_root: Path,
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """http → parquet, parquet → postgres (merge), postgres → duckdb: jobs made with the
    REST API, run by the engine."""
    monkeypatch.setenv("ORC_HTTP_ALLOWLIST", "127.0.0.1")
    monkeypatch.setenv("WAREHOUSE_DSN", pg_dsn)
    settings = with_admin_token(sqlite_settings).model_copy(
        update={"api_port": free_port(), "http_allowlist": "127.0.0.1"}
    )
    base = f"http://{settings.api_host}:{settings.api_port}"
    with serve() as api_server:
        api_server.route(orders_api)
        jobs = [
            {
                "name": "orders-from-api",
                "extractor_type": "http",
                "extractor_config": {
                    "url": api_server.url("/orders"),
                    "records_path": "data.items",
                    "pagination": {"type": "page_number"},
                },
                "loader_type": "parquet",
                "loader_config": {"path": "lake/orders.parquet"},
            },
            {
                "name": "orders-to-postgres",
                "extractor_type": "parquet",
                "extractor_config": {"path": "lake/orders.parquet", "filter": [["qty", ">", 1]]},
                "loader_type": "postgres",
                "loader_config": {
                    "dsn_env": "WAREHOUSE_DSN",
                    "table": "shop.orders",
                    "mode": "merge",
                    "key_columns": ["id"],
                },
            },
            {
                "name": "orders-to-duckdb",
                "extractor_type": "postgres",
                "extractor_config": {
                    "dsn_env": "WAREHOUSE_DSN",
                    "query": "SELECT id, item, qty FROM shop.orders",
                    "cursor_column": "id",
                },
                "loader_type": "duckdb",
                "loader_config": {"database": "wh.duckdb", "table": "orders"},
            },
        ]
        async with (
            tap(settings, "run.finished") as t,
            engine_running(settings, ("api", "coordinator", "worker")),
            httpx.AsyncClient(base_url=base, headers=bearer(ADMIN_TOKEN)) as client,
        ):
            await wait_healthy(client)
            catalog = (await client.get("/plugins")).json()
            names = {p["name"] for p in catalog["extractors"]}
            assert {"csv", "parquet", "http", "postgres"} <= names
            loader_schemas = {p["name"]: p["config_schema"] for p in catalog["loaders"]}
            assert {"duckdb", "parquet", "postgres"} <= set(loader_schemas)
            assert "dsn_env" in loader_schemas["postgres"]["properties"]

            outside = dict(jobs[1], name="sneaky", extractor_config={"path": "../../etc/passwd"})
            refused = await client.post("/jobs", json=outside)
            assert refused.status_code == 422, refused.text
            assert "extractor_config.path" in refused.text

            for body in jobs:
                created = await client.post("/jobs", json=body)
                assert created.status_code == 201, created.text
                triggered = await client.post(f"/jobs/{created.json()['id']}/run")
                assert triggered.status_code == 202, triggered.text
                finished = await t.next(RunFinished, 30, run_id=uuid.UUID(triggered.json()["id"]))
                assert finished.status is RunStatus.COMPLETED, (
                    body["name"],
                    finished.error_message,
                )

    assert pq.read_table(data_root / "lake" / "orders.parquet").to_pydict() == {
        "id": [1, 2, 1],
        "item": ["a", "b", "a"],
        "qty": [2, 1, 5],
    }
    assert sql(pg_dsn, "SELECT id, qty FROM shop.orders ORDER BY id") == [(1, 5)]
    with duckdb.connect(str(data_root / "wh.duckdb"), read_only=True) as con:
        assert con.execute("SELECT id, item, qty FROM orders").fetchall() == [(1, "a", 5)]
