"""PATCH, retry and timeout fields, DELETE with runs in progress, idempotent triggers,
the runs of a job, body size, and secret masking."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession

from api import masking
from common.db.engine import make_engine, make_sessionmaker
from common.db.models import JobDefinition, JobRun
from common.errors import PluginNotFound
from common.events import JobDue
from common.settings import Settings
from common.states import RunStatus, Trigger
from plugins.base import Extractor, PluginConfig
from plugins.registry import clear_registrations, register_extractor
from tests.integration.api.conftest import Client, Listener, job_body

RETRY_DEFAULTS = {
    "retry_backoff_seconds": 5.0,
    "retry_backoff_factor": 2.0,
    "retry_backoff_max_seconds": 3600.0,
    "retry_jitter": 0.1,
    "timeout_seconds": None,
}


@pytest.fixture
async def session(sqlite_settings: Settings) -> AsyncIterator[AsyncSession]:
    engine = make_engine(sqlite_settings.database_url)
    try:
        async with make_sessionmaker(engine)() as db_session:
            yield db_session
    finally:
        await engine.dispose()


async def add_run(
    session: AsyncSession,
    job_id: str,
    status: RunStatus,
    created_at: datetime,
    trigger: Trigger = Trigger.MANUAL,
) -> JobRun:
    run = JobRun(
        id=uuid.uuid4(),
        job_definition_id=uuid.UUID(job_id),
        status=status,
        trigger=trigger,
        created_at=created_at,
    )
    session.add(run)
    await session.commit()
    return run


async def test_retry_and_timeout_fields(sqlite_client: Client) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body())).json()
    assert {k: job[k] for k in RETRY_DEFAULTS} == RETRY_DEFAULTS
    chosen = {
        "retry_backoff_seconds": 0.5,
        "retry_backoff_factor": 3.0,
        "retry_backoff_max_seconds": 60.0,
        "retry_jitter": 0.0,
        "timeout_seconds": 120.0,
    }
    other = (await sqlite_client.post("/jobs", json=job_body("other", **chosen))).json()
    assert {k: other[k] for k in chosen} == chosen
    assert (await sqlite_client.get(f"/jobs/{other['id']}")).json() == other


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retry_backoff_seconds", 0),
        ("retry_backoff_seconds", -1),
        ("retry_backoff_factor", 0.5),
        ("retry_backoff_factor", 1000),
        ("retry_backoff_max_seconds", 0),
        ("retry_jitter", 1.5),
        ("retry_jitter", -0.1),
        ("timeout_seconds", 0),
        ("timeout_seconds", "soon"),
    ],
)
async def test_bad_retry_fields_are_422(sqlite_client: Client, field: str, value: Any) -> None:
    answer = await sqlite_client.post("/jobs", json=job_body(**{field: value}))
    assert answer.status_code == 422, answer.text
    assert [e["field"] for e in answer.json()["errors"]] == [field]


async def test_patch_changes_only_the_fields_sent(sqlite_client: Client) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body(timeout_seconds=30))).json()
    url = f"/jobs/{job['id']}"

    disabled = await sqlite_client.patch(url, json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    changed = disabled.json()
    assert changed["enabled"] is False
    unchanged = {k: v for k, v in job.items() if k not in ("enabled", "updated_at")}
    assert {k: v for k, v in changed.items() if k in unchanged} == unchanged

    cleared = (
        await sqlite_client.patch(url, json={"schedule": None, "timeout_seconds": None})
    ).json()
    assert (cleared["schedule"], cleared["timeout_seconds"]) == (None, None)
    assert cleared["enabled"] is False

    reconfigured = await sqlite_client.patch(
        url, json={"extractor_config": {"path": "in/other.csv"}, "retry_jitter": 0.5}
    )
    assert reconfigured.json()["extractor_config"] == {"path": "in/other.csv"}
    assert reconfigured.json()["retry_jitter"] == 0.5
    assert (await sqlite_client.patch(url, json={})).json() == reconfigured.json()
    assert (await sqlite_client.get(url)).json() == reconfigured.json()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"schedule": "often"}, "schedule"),
        ({"timezone": "Mars/Base"}, "timezone"),
        ({"extractor_type": "ftp"}, "extractor_type"),
        ({"extractor_config": {"path": "../x.csv"}}, "extractor_config.path"),
        ({"loader_config": {"database": "o.duckdb"}}, "loader_config.table"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"retry_jitter": 2}, "retry_jitter"),
        ({"owner": "me"}, "owner"),
    ],
)
async def test_bad_patch_is_422_and_changes_nothing(
    sqlite_client: Client, patch: dict[str, Any], field: str
) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body())).json()
    answer = await sqlite_client.patch(f"/jobs/{job['id']}", json=patch)
    assert answer.status_code == 422, answer.text
    assert field in {e["field"] for e in answer.json()["errors"]}, answer.json()
    assert (await sqlite_client.get(f"/jobs/{job['id']}")).json() == job


async def test_patch_to_a_taken_name_is_409(sqlite_client: Client) -> None:
    await sqlite_client.post("/jobs", json=job_body("a"))
    b = (await sqlite_client.post("/jobs", json=job_body("b"))).json()
    assert (await sqlite_client.patch(f"/jobs/{b['id']}", json={"name": "a"})).status_code == 409


async def test_delete_refuses_a_job_with_a_run_in_progress(
    sqlite_client: Client, session: AsyncSession
) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body())).json()
    now = datetime.now(UTC)
    done = await add_run(session, job["id"], RunStatus.COMPLETED, now)
    for status in (RunStatus.PENDING, RunStatus.RUNNING):
        run = await add_run(session, job["id"], status, now)
        answer = await sqlite_client.delete(f"/jobs/{job['id']}")
        assert answer.status_code == 409, answer.text
        assert str(run.id) in answer.json()["detail"]
        run.status = RunStatus.CANCELLED
        await session.commit()
    assert (await sqlite_client.delete(f"/jobs/{job['id']}")).status_code == 204
    assert (await sqlite_client.get(f"/job_runs/{done.id}")).status_code == 404


async def test_runs_of_a_job_with_filters(sqlite_client: Client, session: AsyncSession) -> None:
    a = (await sqlite_client.post("/jobs", json=job_body("a"))).json()
    b = (await sqlite_client.post("/jobs", json=job_body("b"))).json()
    t0 = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    runs = [
        await add_run(session, a["id"], RunStatus.COMPLETED, t0, Trigger.SCHEDULE),
        await add_run(session, a["id"], RunStatus.FAILED, t0 + timedelta(hours=1)),
        await add_run(session, a["id"], RunStatus.COMPLETED, t0 + timedelta(hours=2)),
        await add_run(session, b["id"], RunStatus.COMPLETED, t0 + timedelta(hours=3)),
    ]

    async def ids(url: str, **params: str) -> list[uuid.UUID]:
        answer = await sqlite_client.get(url, params=params)
        assert answer.status_code == 200, answer.text
        return [uuid.UUID(r["id"]) for r in answer.json()["items"]]

    of_a = f"/jobs/{a['id']}/runs"
    assert await ids(of_a) == [runs[2].id, runs[1].id, runs[0].id]
    assert await ids(of_a, status="COMPLETED") == [runs[2].id, runs[0].id]
    assert await ids(of_a, trigger="schedule") == [runs[0].id]
    hour = (t0 + timedelta(hours=1)).isoformat()
    assert await ids(of_a, created_after=hour) == [runs[2].id, runs[1].id]
    assert await ids(of_a, created_before=hour) == [runs[0].id]
    # A time without an offset is UTC; another offset is converted.
    assert await ids(of_a, created_after="2030-05-01T13:00:00") == [runs[2].id, runs[1].id]
    assert await ids(of_a, created_before="2030-05-01T14:30:00+02:00") == [runs[0].id]
    assert await ids("/job_runs", created_after=hour, status="COMPLETED") == [
        runs[3].id,
        runs[2].id,
    ]
    page = (await sqlite_client.get(of_a, params={"limit": 1, "offset": 1})).json()
    assert (page["total"], [r["id"] for r in page["items"]]) == (3, [str(runs[1].id)])
    assert (await sqlite_client.get(f"/jobs/{uuid.uuid4()}/runs")).status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"created_after": "yesterday"},
        {"created_before": "2030-13-01"},
        {"created_after": "9999-12-31T23:59:59-14:00"},
        {"status": "DONE"},
    ],
)
async def test_bad_run_filters_are_400(sqlite_client: Client, params: dict[str, str]) -> None:
    for url in ("/job_runs", f"/jobs/{uuid.uuid4()}/runs"):
        answer = await sqlite_client.get(url, params=params)
        assert answer.status_code == 400, answer.text
        assert [e["field"] for e in answer.json()["errors"]] == list(params)


async def test_idempotency_key_names_the_same_run(sqlite_client: Client, events: Listener) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body())).json()
    other = (await sqlite_client.post("/jobs", json=job_body("other"))).json()

    async def trigger(job_id: str, key: str | None) -> str:
        headers = {"Idempotency-Key": key} if key is not None else {}
        answer = await sqlite_client.post(f"/jobs/{job_id}/run", headers=headers)
        assert answer.status_code == 202, answer.text
        due = await events.next_of(JobDue)
        assert str(due.run_id) == answer.json()["id"]
        return str(answer.json()["id"])

    first = await trigger(job["id"], "nightly-2030-05-01")
    assert await trigger(job["id"], "nightly-2030-05-01") == first
    assert await trigger(job["id"], "nightly-2030-05-02") != first
    assert await trigger(other["id"], "nightly-2030-05-01") != first
    assert await trigger(job["id"], None) != await trigger(job["id"], None)
    too_long = await sqlite_client.post(
        f"/jobs/{job['id']}/run", headers={"Idempotency-Key": "k" * 201}
    )
    assert too_long.status_code == 400
    assert too_long.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_a_body_over_the_limit_is_413(
    sqlite_client: Client, sqlite_settings: Settings
) -> None:
    size = sqlite_settings.api_max_body_bytes + 1
    big = job_body(extractor_config={"path": "in/a.csv", "comment": "x" * size})
    answer = await sqlite_client.post("/jobs", json=big)
    assert answer.status_code == 413
    assert answer.json()["status_code"] == 413
    assert set(answer.json()) == {"status_code", "detail", "errors"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "a\u0000b"}, "name"),
        ({"extractor_config": {"path": "in/a.csv", "x\u0000": 1}}, "extractor_config"),
        ({"timezone": "Europe/Ber\u0000lin"}, "timezone"),
        ({"schedule": "0 3 * * *\u0000"}, "schedule"),
    ],
)
async def test_nul_characters_are_422(client: Client, changes: dict[str, Any], field: str) -> None:
    answer = await client.post("/jobs", json=job_body(**changes))
    assert answer.status_code == 422, answer.text
    assert field in {e["field"] for e in answer.json()["errors"]}


async def test_a_name_filter_with_a_nul_is_no_500(client: Client) -> None:
    answer = await client.get("/jobs", params={"name": "a\u0000b"})
    assert answer.status_code in (200, 400), answer.text


class _SecretConfig(PluginConfig):
    path: str
    password: SecretStr
    headers: dict[str, SecretStr] = {}


class _SecretExtractor(Extractor[_SecretConfig]):
    config_model = _SecretConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        return iter(())


@pytest.fixture
def secret_plugin() -> Iterator[str]:
    register_extractor("vault", _SecretExtractor)
    try:
        yield "vault"
    finally:
        clear_registrations()


async def test_secrets_are_masked_and_kept(
    client: Client, settings: Settings, secret_plugin: str
) -> None:
    config = {"path": "in/a.csv", "password": "hunter2", "headers": {"X-Key": "k-123"}}
    created = await client.post(
        "/jobs", json=job_body(extractor_type=secret_plugin, extractor_config=config)
    )
    assert created.status_code == 201, created.text
    job = created.json()
    masked = {"path": "in/a.csv", "password": "***", "headers": {"X-Key": "***"}}
    assert job["extractor_config"] == masked
    assert (await client.get(f"/jobs/{job['id']}")).json()["extractor_config"] == masked
    listed = await client.get("/jobs")
    assert "hunter2" not in listed.text and "k-123" not in listed.text

    # What a client read, sent back (renamed), keeps the secrets.
    body = {k: v for k, v in job.items() if k in job_body() or k in RETRY_DEFAULTS}
    body["name"] = "renamed"
    assert (await client.put(f"/jobs/{job['id']}", json=body)).status_code == 200
    assert await _stored_config(settings, job["id"]) == config
    patch = {"extractor_config": {**masked, "path": "in/b.csv"}}
    assert (await client.patch(f"/jobs/{job['id']}", json=patch)).status_code == 200
    assert await _stored_config(settings, job["id"]) == {**config, "path": "in/b.csv"}
    # A new secret replaces the old one.
    fresh = {**config, "password": "correct horse"}
    await client.patch(f"/jobs/{job['id']}", json={"extractor_config": fresh})
    assert (await _stored_config(settings, job["id"]))["password"] == "correct horse"


async def _stored_config(settings: Settings, job_id: str) -> dict[str, Any]:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as db:
            job = await db.get(JobDefinition, uuid.UUID(job_id))
            assert job is not None
            return dict(job.extractor_config)
    finally:
        await engine.dispose()


async def test_an_uninstalled_plugin_hides_its_whole_config(
    sqlite_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body())).json()

    def gone(name: str) -> Any:
        raise PluginNotFound(name)

    monkeypatch.setattr(masking, "get_extractor", gone)
    shown = (await sqlite_client.get(f"/jobs/{job['id']}")).json()
    assert shown["extractor_config"] == {"path": "***", "delimiter": "***"}
    assert shown["loader_config"] == job["loader_config"]
