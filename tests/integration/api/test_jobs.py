"""Job definition CRUD through the REST API, on both state stores."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.integration.api.conftest import Client, job_body

ERROR_KEYS = {"status_code", "detail", "errors"}


def fields_at_fault(answer: dict[str, Any]) -> set[str]:
    return {e["field"] for e in answer["errors"]}


async def test_crud_round_trip(client: Client) -> None:
    created = await client.post("/jobs", json=job_body())
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["name"] == "daily-sales"
    assert job["schedule"] == "0 3 * * *"
    assert job["timezone"] == "Europe/Berlin"
    assert job["max_attempts"] == 3
    assert job["enabled"] is True
    # Stored as the user wrote it: relative paths stay readable.
    assert job["extractor_config"] == {"path": "in/sales.csv", "delimiter": ";"}
    assert job["loader_config"]["database"] == "out/sales.duckdb"
    job_id = job["id"]
    uuid.UUID(job_id)

    fetched = await client.get(f"/jobs/{job_id}")
    assert fetched.status_code == 200
    assert fetched.json() == job

    listed = (await client.get("/jobs")).json()
    assert listed["total"] == 1
    assert listed["items"] == [job]

    replaced = await client.put(
        f"/jobs/{job_id}",
        json=job_body("nightly-sales", schedule="0 0 3 * * *", enabled=False, max_attempts=5),
    )
    assert replaced.status_code == 200, replaced.text
    new = replaced.json()
    assert new["id"] == job_id
    assert new["name"] == "nightly-sales"
    assert new["schedule"] == "0 0 3 * * *"
    assert new["enabled"] is False
    assert new["max_attempts"] == 5
    assert new["created_at"] == job["created_at"]
    assert datetime.fromisoformat(new["updated_at"]) >= datetime.fromisoformat(job["updated_at"])
    assert (await client.get(f"/jobs/{job_id}")).json() == new

    # PUT replaces the whole definition: an omitted optional field takes its default.
    unscheduled = await client.put(f"/jobs/{job_id}", json=job_body("nightly-sales", schedule=None))
    assert unscheduled.json()["schedule"] is None
    assert unscheduled.json()["max_attempts"] == 3

    deleted = await client.delete(f"/jobs/{job_id}")
    assert deleted.status_code == 204
    assert (await client.get(f"/jobs/{job_id}")).status_code == 404
    assert (await client.delete(f"/jobs/{job_id}")).status_code == 404
    assert (await client.get("/jobs")).json()["total"] == 0


async def test_duplicate_name_is_409(client: Client) -> None:
    assert (await client.post("/jobs", json=job_body("a"))).status_code == 201
    clash = await client.post("/jobs", json=job_body("a"))
    assert clash.status_code == 409
    assert set(clash.json()) == ERROR_KEYS
    assert "'a'" in clash.json()["detail"]

    other = (await client.post("/jobs", json=job_body("b"))).json()
    renamed = await client.put(f"/jobs/{other['id']}", json=job_body("a"))
    assert renamed.status_code == 409
    # Keeping its own name is no clash.
    assert (await client.put(f"/jobs/{other['id']}", json=job_body("b"))).status_code == 200


BAD_BODIES = [
    pytest.param({"schedule": "every day"}, "schedule", id="cron-words"),
    pytest.param({"schedule": "61 * * * *"}, "schedule", id="cron-minute-out-of-range"),
    pytest.param({"schedule": "* * * *"}, "schedule", id="cron-four-fields"),
    pytest.param({"timezone": "Mars/Olympus"}, "timezone", id="unknown-zone"),
    pytest.param({"extractor_type": "ftp"}, "extractor_type", id="unknown-extractor"),
    pytest.param({"loader_type": "oracle"}, "loader_type", id="unknown-loader"),
    pytest.param(
        {"loader_config": {"database": "o.duckdb", "table": "t", "mode": "upsert"}},
        "loader_config.mode",
        id="loader-mode",
    ),
    pytest.param(
        {"loader_config": {"database": "o.duckdb", "table": "drop table; --"}},
        "loader_config.table",
        id="loader-table-name",
    ),
    pytest.param({"extractor_config": {"path": "../x.csv"}}, "extractor_config.path", id="dotdot"),
    pytest.param(
        {"extractor_config": {"path": "/etc/passwd"}}, "extractor_config.path", id="absolute"
    ),
    pytest.param({"extractor_config": {}}, "extractor_config.path", id="config-field-missing"),
    pytest.param(
        {"extractor_config": {"path": "a.csv", "sheet": 1}},
        "extractor_config.sheet",
        id="config-field-unknown",
    ),
    pytest.param({"extractor_config": "a.csv"}, "extractor_config", id="config-not-an-object"),
    pytest.param({"max_attempts": 0}, "max_attempts", id="attempts-zero"),
    pytest.param({"max_attempts": 101}, "max_attempts", id="attempts-too-many"),
    pytest.param({"name": ""}, "name", id="name-empty"),
    pytest.param({"name": "x" * 201}, "name", id="name-too-long"),
    pytest.param({"owner": "me"}, "owner", id="unknown-field"),
]


@pytest.mark.parametrize(("changes", "field"), BAD_BODIES)
async def test_invalid_job_is_422_naming_the_field(
    sqlite_client: Client, changes: dict[str, Any], field: str
) -> None:
    answer = await sqlite_client.post("/jobs", json=job_body(**changes))
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert set(body) == ERROR_KEYS
    assert body["status_code"] == 422
    assert field in fields_at_fault(body), body
    assert field in body["detail"]
    assert all(e["message"] for e in body["errors"])
    assert (await sqlite_client.get("/jobs")).json()["total"] == 0


async def test_path_outside_data_root_message_says_so(sqlite_client: Client) -> None:
    answer = await sqlite_client.post("/jobs", json=job_body(extractor_config={"path": "../x.csv"}))
    [error] = answer.json()["errors"]
    assert error["field"] == "extractor_config.path"
    assert "outside" in error["message"]


async def test_unknown_plugin_message_lists_the_known_ones(sqlite_client: Client) -> None:
    answer = await sqlite_client.post("/jobs", json=job_body(extractor_type="ftp"))
    [error] = answer.json()["errors"]
    assert error == {"field": "extractor_type", "message": error["message"]}
    assert "csv" in error["message"]


@pytest.mark.parametrize("missing", ["name", "extractor_type", "loader_type"])
async def test_missing_required_field_is_422(sqlite_client: Client, missing: str) -> None:
    body = job_body()
    del body[missing]
    answer = await sqlite_client.post("/jobs", json=body)
    assert answer.status_code == 422
    assert missing in fields_at_fault(answer.json())


async def test_every_problem_is_named_at_once(sqlite_client: Client) -> None:
    answer = await sqlite_client.post(
        "/jobs",
        json=job_body(
            extractor_config={"path": "/etc/passwd"},
            loader_config={"database": "o.duckdb", "table": "t", "mode": "upsert"},
        ),
    )
    assert fields_at_fault(answer.json()) == {"extractor_config.path", "loader_config.mode"}


async def test_put_validates_like_post(sqlite_client: Client) -> None:
    job = (await sqlite_client.post("/jobs", json=job_body())).json()
    answer = await sqlite_client.put(f"/jobs/{job['id']}", json=job_body(schedule="nope"))
    assert answer.status_code == 422
    assert fields_at_fault(answer.json()) == {"schedule"}
    assert (await sqlite_client.get(f"/jobs/{job['id']}")).json() == job


async def test_six_field_cron_has_seconds_first(sqlite_client: Client) -> None:
    answer = await sqlite_client.post("/jobs", json=job_body(schedule="*/2  * * * * *"))
    assert answer.status_code == 201
    assert answer.json()["schedule"] == "*/2 * * * * *"


async def test_malformed_json_is_400(sqlite_client: Client) -> None:
    answer = await sqlite_client.post(
        "/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400
    assert set(answer.json()) == ERROR_KEYS


async def test_body_not_an_object_is_422(sqlite_client: Client) -> None:
    answer = await sqlite_client.post("/jobs", json=[1, 2])
    assert answer.status_code == 422
    assert fields_at_fault(answer.json()) == {"body"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/jobs/{id}"),
        ("PUT", "/jobs/{id}"),
        ("DELETE", "/jobs/{id}"),
        ("POST", "/jobs/{id}/run"),
        ("GET", "/job_runs/{id}"),
        ("GET", "/job_runs/{id}/tasks"),
        ("GET", "/tasks/{id}"),
    ],
)
@pytest.mark.parametrize("ident", [str(uuid.uuid4()), "not-a-uuid"])
async def test_unknown_id_is_404(sqlite_client: Client, method: str, path: str, ident: str) -> None:
    body = job_body() if method == "PUT" else None
    answer = await sqlite_client.request(method, path.format(id=ident), json=body)
    assert answer.status_code == 404, answer.text
    assert set(answer.json()) == ERROR_KEYS
    assert answer.json()["status_code"] == 404


async def test_list_filters(sqlite_client: Client) -> None:
    await sqlite_client.post("/jobs", json=job_body("on"))
    await sqlite_client.post("/jobs", json=job_body("off", enabled=False))
    enabled = (await sqlite_client.get("/jobs", params={"enabled": "true"})).json()
    assert [j["name"] for j in enabled["items"]] == ["on"]
    disabled = (await sqlite_client.get("/jobs", params={"enabled": "false"})).json()
    assert [j["name"] for j in disabled["items"]] == ["off"]
    named = (await sqlite_client.get("/jobs", params={"name": "off"})).json()
    assert named["total"] == 1
    assert named["items"][0]["enabled"] is False
    assert (await sqlite_client.get("/jobs", params={"name": "nobody"})).json()["total"] == 0


async def test_pagination(client: Client) -> None:
    names = [f"job-{i}" for i in range(5)]
    for name in names:
        assert (await client.post("/jobs", json=job_body(name))).status_code == 201

    # Newest first.
    first = (await client.get("/jobs", params={"limit": 2})).json()
    assert first["limit"] == 2
    assert first["offset"] == 0
    assert first["total"] == 5
    assert [j["name"] for j in first["items"]] == ["job-4", "job-3"]

    last = (await client.get("/jobs", params={"limit": 2, "offset": 4})).json()
    assert [j["name"] for j in last["items"]] == ["job-0"]
    assert last["total"] == 5

    beyond = (await client.get("/jobs", params={"offset": 10})).json()
    assert beyond["items"] == []
    assert beyond["total"] == 5

    default = (await client.get("/jobs")).json()
    assert (default["limit"], default["offset"]) == (50, 0)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"enabled": "maybe"}, "enabled"),
    ],
)
async def test_bad_query_is_400(sqlite_client: Client, params: dict[str, Any], field: str) -> None:
    answer = await sqlite_client.get("/jobs", params=params)
    assert answer.status_code == 400, answer.text
    assert set(answer.json()) == ERROR_KEYS
    assert field in fields_at_fault(answer.json())
