"""infra/healthcheck.py, the image's `orc-healthcheck`, against servers on loopback."""

from __future__ import annotations

import importlib.util
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "infra" / "healthcheck.py"


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("orc_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(status: int) -> tuple[ThreadingHTTPServer, int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def test_usage_errors(healthcheck: ModuleType) -> None:
    assert healthcheck.main([]) == 2
    assert healthcheck.main(["broker", "nope"]) == 2


def test_reachable_broker_and_database(
    healthcheck: ModuleType, listening: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORC_BROKER_URL", f"amqp://u:pw@127.0.0.1:{listening}/")
    monkeypatch.setenv("ORC_DATABASE_URL", f"postgresql+asyncpg://u:pw@127.0.0.1:{listening}/db")
    assert healthcheck.main(["broker", "database"]) == 0


def test_a_file_database_needs_no_connection(
    healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORC_DATABASE_URL", "sqlite+aiosqlite:///.orc/orc.db")
    assert healthcheck.main(["database"]) == 0


def test_unreachable_broker_fails_without_printing_its_password(
    healthcheck: ModuleType,
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ORC_BROKER_URL", f"amqp://someone:s3cret@127.0.0.1:{closed_port}/")
    assert healthcheck.main(["broker"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("broker:")
    assert "s3cret" not in err
    assert "someone" not in err


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1)])
def test_api_health(
    healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch, status: int, code: int
) -> None:
    server, port = _serve(status)
    try:
        monkeypatch.setenv("ORC_API_HOST", "0.0.0.0")
        monkeypatch.setenv("ORC_API_PORT", str(port))
        assert healthcheck.main(["api"]) == code
    finally:
        server.shutdown()
        server.server_close()


def test_api_down(
    healthcheck: ModuleType, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORC_API_HOST", "127.0.0.1")
    monkeypatch.setenv("ORC_API_PORT", str(closed_port))
    assert healthcheck.main(["api"]) == 1
