"""A real HTTP server on 127.0.0.1 for the `http` extractor's tests (stdlib only)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    status: int = 200
    json: Any = None
    text: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


Handler = Callable[[Request], Response]


@dataclass
class Server:
    base: str
    requests: list[Request]
    handler: list[Handler]

    def route(self, handler: Handler) -> None:
        self.handler[0] = handler

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


@contextmanager
def serve() -> Iterator[Server]:
    requests: list[Request] = []
    slot: list[Handler] = [lambda request: Response(404, json={"error": "no route"})]
    stop = threading.Event()

    class RequestHandler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            request = Request(
                method=self.command,
                path=parts.path,
                query={k: v[-1] for k, v in parse_qs(parts.query).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            requests.append(request)
            response = slot[0](request)
            if response.delay:
                stop.wait(response.delay)
            payload = (
                response.text.encode()
                if response.text is not None
                else json.dumps(response.json).encode()
            )
            self.send_response(response.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _answer
        do_POST = _answer

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{server.server_address[1]}", requests, slot)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
