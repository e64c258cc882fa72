"""Bearer tokens and roles: the role matrix of every endpoint, token storage, seeding."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from api.app import create_app
from api.credentials import Role, hash_token
from common.db.engine import make_engine, make_sessionmaker
from common.db.models import ApiToken
from common.settings import Settings
from tests.integration.api.conftest import (
    ADMIN_TOKEN,
    Client,
    bearer,
    http_client,
    job_body,
    make_token,
    served,
    with_admin_token,
)

V, OP, A = Role.VIEWER, Role.OPERATOR, Role.ADMIN
ANY = "any token"

# Every endpoint and the least role it needs. The test below checks that this table names
# every operation of the OpenAPI document, so a new endpoint cannot skip it.
MATRIX: list[tuple[str, str, Role | str]] = [
    ("GET", "/jobs", V),
    ("POST", "/jobs", A),
    ("GET", "/jobs/{id}", V),
    ("PUT", "/jobs/{id}", A),
    ("PATCH", "/jobs/{id}", A),
    ("DELETE", "/jobs/{id}", A),
    ("POST", "/jobs/{id}/run", OP),
    ("GET", "/jobs/{id}/runs", V),
    ("GET", "/job_runs", V),
    ("GET", "/job_runs/{id}", V),
    ("GET", "/job_runs/{id}/tasks", V),
    ("POST", "/job_runs/{id}/cancel", OP),
    ("GET", "/job_runs/{id}/events", V),
    ("GET", "/events", V),
    ("GET", "/tasks/{id}", V),
    ("GET", "/workers", V),
    ("GET", "/plugins", V),
    ("POST", "/tokens", A),
    ("GET", "/tokens", A),
    ("DELETE", "/tokens/{id}", A),
    ("GET", "/asyncapi", V),
    ("GET", "/schema", ANY),
    ("GET", "/schema/openapi.json", ANY),
]
PUBLIC = [("GET", "/health")]


def _body(method: str, path: str) -> dict[str, object] | None:
    if path.startswith("/jobs") and method in ("POST", "PUT", "PATCH") and "run" not in path:
        return job_body(f"job-{uuid.uuid4().hex[:8]}")
    if path == "/tokens" and method == "POST":
        return {"name": "from-the-matrix", "role": "viewer"}
    return None


async def _status(http: httpx.AsyncClient, method: str, path: str) -> int:
    """The answer's status; a stream is closed as soon as its headers arrive."""
    url = path.replace("{id}", str(uuid.uuid4()))
    async with http.stream(method, url, json=_body(method, path)) as answer:
        return answer.status_code


@pytest.fixture
async def tokens(sqlite_settings: Settings) -> dict[str, str | None]:
    return {
        "none": None,
        "bad": "orc_not-a-token-anyone-was-given",
        "viewer": await make_token(sqlite_settings, V),
        "operator": await make_token(sqlite_settings, OP),
        "admin": ADMIN_TOKEN,
    }


def _expected(who: str, needs: Role | str) -> str:
    if who in ("none", "bad"):
        return "401"
    if needs == ANY or Role(who).allows(Role(needs)):
        return "allowed"
    return "403"


@pytest.mark.parametrize("who", ["none", "bad", "viewer", "operator", "admin"])
async def test_role_matrix(
    sqlite_settings: Settings, tokens: dict[str, str | None], who: str
) -> None:
    mismatches = []
    async with (
        served(with_admin_token(sqlite_settings)) as base,
        http_client(base, tokens[who]) as http,
    ):
        for method, path, needs in MATRIX:
            status = await _status(http, method, path)
            got = str(status) if status in (401, 403) else "allowed"
            if got != _expected(who, needs):
                mismatches.append(f"{method} {path}: {status}, not {_expected(who, needs)}")
        for method, path in PUBLIC:
            assert await _status(http, method, path) == 200
    assert not mismatches, f"as {who}:\n" + "\n".join(mismatches)


async def test_the_matrix_names_every_operation(sqlite_client: Client) -> None:
    document = (await sqlite_client.get("/schema")).json()
    documented = {
        (method.upper(), re.sub(r"\{[^}]+\}", "{id}", path))
        for path, operations in document["paths"].items()
        for method in operations
    }
    listed = {(m, p) for m, p, _ in MATRIX} | set(PUBLIC)
    assert documented == listed - {("GET", "/schema"), ("GET", "/schema/openapi.json")}


async def test_the_document_lists_401_and_403_where_they_can_happen(sqlite_client: Client) -> None:
    paths = (await sqlite_client.get("/schema")).json()["paths"]
    for method, path, needs in MATRIX:
        if path.startswith("/schema"):
            continue
        [template] = [p for p in paths if re.sub(r"\{[^}]+\}", "{id}", p) == path]
        operation = paths[template][method.lower()]
        assert "401" in operation["responses"], (method, path)
        assert ("403" in operation["responses"]) == (needs in (OP, A)), (method, path)
        if "requestBody" in operation:
            assert "413" in operation["responses"], (method, path)


async def test_401_has_the_error_shape_and_a_challenge(sqlite_client: Client) -> None:
    for headers in (
        {},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Bearer \u00e9t\u00e9".encode("latin-1")},
    ):
        sqlite_client.headers.pop("Authorization", None)
        answer = await sqlite_client.get("/jobs", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"].startswith("Bearer")
        body = answer.json()
        assert set(body) == {"status_code", "detail", "errors"}
        assert body["status_code"] == 401
        assert body["errors"] == []


async def test_403_says_which_role_is_needed(sqlite_settings: Settings) -> None:
    viewer = await make_token(sqlite_settings, V)
    async with AsyncTestClient(app=create_app(sqlite_settings)) as client:
        answer = await client.post(f"/jobs/{uuid.uuid4()}/run", headers=bearer(viewer))
    assert answer.status_code == 403
    assert answer.json()["detail"] == ("a viewer token may not do this; it needs the operator role")


async def test_health_is_open_and_docs_can_be_opened(sqlite_settings: Settings) -> None:
    async with AsyncTestClient(app=create_app(sqlite_settings)) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/schema")).status_code == 401
        assert (await client.get("/schema/swagger")).status_code == 401
    opened = sqlite_settings.model_copy(update={"api_open_docs": True})
    async with AsyncTestClient(app=create_app(opened)) as client:
        assert (await client.get("/schema")).status_code == 200
        assert (await client.get("/schema/swagger")).status_code == 200
        assert (await client.get("/jobs")).status_code == 401


async def test_tokens_api(sqlite_client: Client) -> None:
    created = await sqlite_client.post("/tokens", json={"name": "ci", "role": "operator"})
    assert created.status_code == 201, created.text
    made = created.json()
    assert made["token"].startswith("orc_")
    assert (made["name"], made["role"], made["revoked"]) == ("ci", "operator", False)
    assert made["last_used_at"] is None

    listed = (await sqlite_client.get("/tokens")).json()
    assert listed["total"] == 2  # and the seeded admin token
    assert all("token" not in item and "token_hash" not in item for item in listed["items"])
    [ci] = [t for t in listed["items"] if t["id"] == made["id"]]
    assert ci == {k: v for k, v in made.items() if k != "token"}

    # The new token works, is recorded as used, and stops working once revoked.
    as_ci = bearer(made["token"])
    assert (await sqlite_client.get("/job_runs", headers=as_ci)).status_code == 200
    listed = (await sqlite_client.get("/tokens")).json()["items"]
    assert next(t for t in listed if t["id"] == made["id"])["last_used_at"] is not None
    assert (await sqlite_client.delete(f"/tokens/{made['id']}")).status_code == 204
    assert (await sqlite_client.delete(f"/tokens/{made['id']}")).status_code == 204
    refused = await sqlite_client.get("/job_runs", headers=as_ci)
    assert refused.status_code == 401
    assert refused.json()["detail"] == "invalid or revoked token"
    listed = (await sqlite_client.get("/tokens")).json()["items"]
    assert next(t for t in listed if t["id"] == made["id"])["revoked"] is True
    assert (await sqlite_client.delete(f"/tokens/{uuid.uuid4()}")).status_code == 404


async def test_a_token_cannot_revoke_itself(sqlite_client: Client) -> None:
    made = (await sqlite_client.post("/tokens", json={"name": "ops", "role": "admin"})).json()
    as_ops = bearer(made["token"])
    answer = await sqlite_client.delete(f"/tokens/{made['id']}", headers=as_ops)
    assert answer.status_code == 409
    assert "itself" in answer.json()["detail"]
    assert (await sqlite_client.get("/tokens", headers=as_ops)).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "role": "root"},
        {"name": "", "role": "viewer"},
        {"name": "x\u0000y", "role": "viewer"},
        {"role": "viewer"},
        {"name": "x", "role": "viewer", "token": "mine"},
    ],
)
async def test_bad_token_requests_are_422(sqlite_client: Client, body: dict[str, str]) -> None:
    answer = await sqlite_client.post("/tokens", json=body)
    assert answer.status_code == 422, answer.text


async def test_the_admin_token_is_seeded_once_and_stays_revoked(sqlite_settings: Settings) -> None:
    settings = with_admin_token(sqlite_settings)
    for _ in range(2):
        async with AsyncTestClient(app=create_app(settings)) as client:
            assert (await client.get("/jobs", headers=bearer(ADMIN_TOKEN))).status_code == 200
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            [row] = (await session.scalars(select(ApiToken))).all()
            assert (row.name, row.role, row.token_hash) == (
                "ORC_ADMIN_TOKEN",
                "admin",
                hash_token(ADMIN_TOKEN),
            )
            row.revoked = True
            await session.commit()
    finally:
        await engine.dispose()
    async with AsyncTestClient(app=create_app(settings)) as client:
        assert (await client.get("/jobs", headers=bearer(ADMIN_TOKEN))).status_code == 401


async def _all_text(connection: AsyncConnection) -> str:
    """Every value of every table, as text."""
    tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    assert "api_tokens" in tables
    dump = []
    for table in tables:
        rows = await connection.execute(text(f'SELECT * FROM "{table}"'))
        dump.extend(repr(tuple(row)) for row in rows)
    return "\n".join(dump)


@pytest.fixture
async def many_tokens(settings: Settings) -> tuple[Settings, list[str]]:
    """Tokens made every way there is: seeded, by the API, by the CLI's function."""
    seeded = with_admin_token(settings)
    clear = [ADMIN_TOKEN]
    async with AsyncTestClient(app=create_app(seeded)) as client:
        client.headers.update(bearer(ADMIN_TOKEN))
        for role in ("viewer", "operator", "admin"):
            answer = await client.post("/tokens", json={"name": role, "role": role})
            clear.append(answer.json()["token"])
        for token in clear:  # each used once, so last_used_at is written too
            assert (await client.get("/jobs", headers=bearer(token))).status_code == 200
    clear.append(await make_token(settings, Role.VIEWER))
    return seeded, clear


async def test_clear_tokens_are_stored_nowhere(
    many_tokens: tuple[Settings, list[str]], tmp_path: Path
) -> None:
    settings, clear = many_tokens
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            dump = await _all_text(connection)
    finally:
        await engine.dispose()
    for token in clear:
        assert hash_token(token) in dump  # the dump does hold the tokens' records
        assert token not in dump
        assert token.removeprefix("orc_") not in dump
    # Nor in the bytes of the SQLite files (the database and its write-ahead log).
    for path in tmp_path.glob("orc.db*"):
        raw = path.read_bytes()
        assert not any(token.encode() in raw for token in clear), path
