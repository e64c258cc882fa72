"""Metrics move with a run, one trace follows it across handlers, log lines carry its ids,
and the ops endpoint answers /metrics, /healthz and /readyz."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from common.events import JobDue
from common.logs import JsonFormatter, _ContextFilter
from common.metrics import REGISTRY
from common.ops_server import OpsServer
from common.settings import Settings
from common.states import RunStatus
from common.tracing import starting
from tests.e2e.test_api_flow import free_port
from tests.harness import engine_running, insert_job, publish, tap
from tests.integration.engine.test_flow import write_csv

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    return _EXPORTER


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(_ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def run_csv_job(settings: Settings, data_root: Path, rows: int = 50) -> uuid.UUID:
    write_csv(data_root / "in.csv", rows)
    job = await insert_job(
        settings,
        name=f"obs-{uuid.uuid4().hex[:6]}",
        extractor_type="csv",
        extractor_config={"path": "in.csv"},
        loader_type="duckdb",
        loader_config={"database": "out.duckdb", "table": "t"},
        max_attempts=1,
    )
    run_id = uuid.uuid4()
    async with tap(settings) as t, engine_running(settings):
        with starting("test trigger", run_id=run_id):
            await publish(settings, JobDue(job_definition_id=job.id, run_id=run_id))
        finished = await t.run_finished(run_id)
    assert finished.status is RunStatus.COMPLETED
    return run_id


async def test_a_run_moves_the_counters(sqlite_settings: Settings, data_root: Path) -> None:
    before = {
        "extract": sample(
            "orc_task_attempts_total", task_type="EXTRACT", plugin="csv", outcome="succeeded"
        ),
        "load": sample(
            "orc_task_attempts_total", task_type="LOAD", plugin="duckdb", outcome="succeeded"
        ),
        "rows": sample("orc_rows_total", task_type="LOAD", plugin="duckdb"),
    }
    await run_csv_job(sqlite_settings, data_root, rows=50)
    finished = [
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "orc_runs_finished"
        for s in metric.samples
        if s.name == "orc_runs_finished_total" and s.labels["status"] == "COMPLETED"
    ]
    assert sum(finished) >= 1
    assert (
        sample("orc_task_attempts_total", task_type="EXTRACT", plugin="csv", outcome="succeeded")
        == before["extract"] + 1
    )
    assert (
        sample("orc_task_attempts_total", task_type="LOAD", plugin="duckdb", outcome="succeeded")
        == before["load"] + 1
    )
    assert sample("orc_rows_total", task_type="LOAD", plugin="duckdb") == before["rows"] + 50
    assert sample("orc_task_duration_seconds_count", task_type="EXTRACT", plugin="csv") >= 1
    assert sample("orc_staged_bytes_total", plugin="csv") > 0


@pytest.mark.parametrize("load_after_extract", [False, True], ids=["own-message", "after-extract"])
async def test_one_trace_follows_the_run_across_handlers(
    sqlite_settings: Settings,
    data_root: Path,
    spans: InMemorySpanExporter,
    load_after_extract: bool,
) -> None:
    spans.clear()
    settings = sqlite_settings.model_copy(update={"load_after_extract": load_after_extract})
    run_id = await run_csv_job(settings, data_root)
    mine: list[ReadableSpan] = [
        s for s in spans.get_finished_spans() if (s.attributes or {}).get("run_id") == str(run_id)
    ]
    by_name = {s.name: s for s in mine}
    trigger = by_name["test trigger"]
    due = by_name["coordinator JobDue"]
    extract = by_name["worker EXTRACT csv"]
    load = by_name["worker LOAD duckdb"]
    assert {s.context.trace_id for s in mine} == {trigger.context.trace_id}
    # trigger (one process) → coordinator (another) → worker (a third), and back.
    assert due.parent is not None and due.parent.span_id == trigger.context.span_id
    assert extract.parent is not None and extract.parent.span_id == due.context.span_id
    succeeded = [s for s in mine if s.name == "coordinator TaskSucceeded"]
    parents = {s.parent.span_id for s in succeeded if s.parent}
    if load_after_extract:
        # The load ran inside the extract's attempt; one outcome reports both.
        assert load.parent is not None and load.parent.span_id == extract.context.span_id
        assert parents == {extract.context.span_id}
    else:
        assert parents == {extract.context.span_id, load.context.span_id}


async def test_log_lines_carry_run_and_task_ids(
    sqlite_settings: Settings, data_root: Path, json_logs: io.StringIO
) -> None:
    settings = sqlite_settings
    job = await insert_job(
        settings,
        name="missing-file",
        extractor_type="csv",
        extractor_config={"path": "absent.csv"},
        loader_type="duckdb",
        loader_config={"database": "out.duckdb", "table": "t"},
        max_attempts=1,
    )
    run_id = uuid.uuid4()
    async with tap(settings) as t, engine_running(settings):
        await publish(settings, JobDue(job_definition_id=job.id, run_id=run_id))
        await t.run_finished(run_id)
    lines = [json.loads(line) for line in json_logs.getvalue().splitlines()]
    failed = [line for line in lines if "failed" in line["message"] and line.get("task_id")]
    assert failed, lines
    line = failed[0]
    assert line["run_id"] == str(run_id)
    assert line["job"] == str(job.id)
    assert line["attempt"] == "1"


async def test_ops_endpoint_serves_metrics_and_health() -> None:
    healthy = asyncio.Event()

    async def ready() -> bool:
        return healthy.is_set()

    port = free_port()
    server = OpsServer("127.0.0.1", port, ready)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert "orc_runs_started_total" in metrics.text
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 503
            healthy.set()
            assert (await client.get("/readyz")).status_code == 200
    finally:
        await server.close()
