"""A small HTTP endpoint beside each component: `/metrics`, `/healthz`, `/readyz`.

Liveness answers while the process's event loop runs; readiness asks the component's own
check (its broker connection and, where it has one, its database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.metrics import REGISTRY

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]


def _response(status: str, body: bytes, content_type: str = "text/plain") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class OpsServer:
    def __init__(self, host: str, port: int, ready: ReadinessCheck) -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        log.info("metrics and health on http://%s:%d/metrics", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            parts = request.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else ""
            if path == "/metrics":
                payload = _response("200 OK", generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                payload = _response("200 OK", b"ok\n")
            elif path == "/readyz":
                ok = False
                with contextlib.suppress(Exception):
                    ok = await asyncio.wait_for(self.ready(), 5)
                payload = (
                    _response("200 OK", b"ready\n")
                    if ok
                    else _response("503 Service Unavailable", b"not ready\n")
                )
            else:
                payload = _response("404 Not Found", b"not found\n")
            writer.write(payload)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
