"""The app as a whole: health, the OpenAPI document, and `serve` inside a bigger process."""

from __future__ import annotations

import asyncio
import signal
import socket

import httpx
import pytest

from api.app import ApiServerError, create_app, serve
from common.settings import Settings
from tests.integration.api.conftest import ADMIN_TOKEN, Client, bearer, with_admin_token

PATHS = {
    "/health",
    "/jobs",
    "/jobs/{job_id}",
    "/jobs/{job_id}/run",
    "/jobs/{job_id}/runs",
    "/job_runs",
    "/job_runs/{run_id}",
    "/job_runs/{run_id}/tasks",
    "/job_runs/{run_id}/cancel",
    "/job_runs/{run_id}/events",
    "/events",
    "/tasks/{task_id}",
    "/workers",
    "/plugins",
    "/tokens",
    "/tokens/{token_id}",
    "/asyncapi",
}


async def test_health(sqlite_client: Client) -> None:
    answer = await sqlite_client.get("/health")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


async def test_openapi_document_lists_every_path(sqlite_client: Client) -> None:
    answer = await sqlite_client.get("/schema")
    assert answer.status_code == 200
    document = answer.json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == PATHS
    assert set(document["paths"]["/jobs/{job_id}"]) == {"get", "put", "patch", "delete"}
    assert "ErrorBody" in document["components"]["schemas"]
    assert document["components"]["securitySchemes"]["bearerToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerToken"]["description"],
    }
    assert (await sqlite_client.get("/schema/openapi.json")).json() == document
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                if code.startswith("4"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, method)
            # Every operation but the health probe needs the token, and says so.
            if path == "/health":
                assert "security" not in operation
                assert "401" not in operation["responses"]
            else:
                assert operation["security"] == [{"bearerToken": []}], (path, method)
                assert "401" in operation["responses"], (path, method)


async def test_unknown_route_has_the_error_shape(sqlite_client: Client) -> None:
    answer = await sqlite_client.get("/nowhere")
    assert answer.status_code == 404
    assert answer.json() == {"status_code": 404, "detail": "Not Found", "errors": []}
    wrong_method = await sqlite_client.patch("/jobs")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["status_code"] == 405


def test_create_app_connects_nothing() -> None:
    # Nothing listens on port 1: building the app must not try to reach either.
    settings = Settings(
        database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none",
        broker_url="amqp://guest:guest@127.0.0.1:1/",
    )
    app = create_app(settings)
    assert app.state.settings is settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_serve_until_stopped(sqlite_settings: Settings) -> None:
    settings = with_admin_token(sqlite_settings).model_copy(update={"api_port": free_port()})
    started, stop = asyncio.Event(), asyncio.Event()
    handler_before = signal.getsignal(signal.SIGINT)
    server = asyncio.create_task(serve(settings, started=started, stop=stop))
    await asyncio.wait_for(started.wait(), 15)
    # Embedded: uvicorn took over no signal.
    assert signal.getsignal(signal.SIGINT) is handler_before
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{settings.api_port}", headers=bearer(ADMIN_TOKEN)
    ) as http:
        assert (await http.get("/health")).json() == {"status": "ok"}
        assert (await http.post("/jobs", json={"name": "x"})).status_code == 422
    stop.set()
    await asyncio.wait_for(server, 15)


async def test_serve_fails_loudly_when_the_port_is_taken(sqlite_settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = sqlite_settings.model_copy(update={"api_port": port})
        with pytest.raises(ApiServerError, match=str(port)):
            await asyncio.wait_for(serve(settings), 15)


async def test_serve_fails_loudly_without_a_broker(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(
        update={"api_port": free_port(), "broker_url": "amqp://guest:guest@127.0.0.1:1/"}
    )
    with pytest.raises(ApiServerError):
        await asyncio.wait_for(serve(settings), 15)


async def test_metrics_are_open_and_asyncapi_needs_a_token(sqlite_settings: Settings) -> None:
    from litestar.testing import AsyncTestClient

    from api.app import create_app
    from tests.integration.api.conftest import ADMIN_TOKEN, bearer, with_admin_token

    settings = with_admin_token(sqlite_settings)
    async with AsyncTestClient(app=create_app(settings)) as client:
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert "orc_runs_finished_total" in metrics.text
        assert (await client.get("/asyncapi")).status_code == 401
        document = await client.get("/asyncapi", headers=bearer(ADMIN_TOKEN))
        assert document.status_code == 200
        channels = document.json()["channels"]
        assert any("job.due" in str(c) for c in channels.values())
