"""A small synchronous client of the REST API for the CLI: JSON calls and event streams.

Every failure becomes an `ApiError` whose message is one line fit for a terminal: the
API's own error answer (`detail`), or what went wrong reaching it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx

from common.errors import OrcError
from common.settings import Settings

CONNECT_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 30.0
# Longer than the API's keep-alive comments (15 s): a stream silent this long is dead.
STREAM_READ_TIMEOUT_SECONDS = 60.0


class ApiError(OrcError):
    """A call to the API failed; `status` is the HTTP status, or None if none came."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StreamEvent:
    """One Server-Sent Event: its name (`snapshot`, `state`, …) and its JSON data."""

    name: str
    data: Any
    id: str | None = None


def api_url(settings: Settings) -> str:
    """`ORC_API_URL`, else the address the API of these settings listens on."""
    if settings.api_url:
        return settings.api_url.rstrip("/")
    host = settings.api_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api_port}"


def _message(response: httpx.Response) -> str:
    """One line from an error answer: the API's `detail`, or the body's start."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, Mapping) and isinstance(body.get("detail"), str):
        detail = str(body["detail"])
    else:
        detail = response.text.strip()[:200] or response.reason_phrase
    line = f"{response.status_code} {detail}".replace("\n", " ")
    if response.status_code == 401:
        line += " (set ORC_API_TOKEN, or make a token with `orc tokens create`)"
    return line


class ApiClient:
    """The API at `base_url`, called with a bearer token (when one is known)."""

    def __init__(
        self, base_url: str, token: str | None, transport: httpx.BaseTransport | None = None
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _unreachable(self, exc: httpx.HTTPError) -> ApiError:
        reason = str(exc) or type(exc).__name__
        return ApiError(f"cannot reach the API at {self.base_url}: {reason}")

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Call the API; the decoded JSON answer (None for 204), or `ApiError`."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=json, params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise ApiError(_message(response), response.status_code)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(f"the API answered {method} {path} with no JSON") from exc

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def job(self, ref: str) -> dict[str, Any]:
        """A job by id or by name."""
        try:
            job_id = uuid.UUID(ref)
        except ValueError:
            found = self.get("/jobs", name=ref)["items"]
            if not found:
                raise ApiError(f"no job named {ref!r}", 404) from None
            job: dict[str, Any] = found[0]
            return job
        by_id: dict[str, Any] = self.get(f"/jobs/{job_id}")
        return by_id

    def stream(self, path: str) -> Iterator[StreamEvent]:
        """The Server-Sent Events of `path`, as they come; ends when the server ends it."""
        timeout = httpx.Timeout(
            REQUEST_TIMEOUT_SECONDS,
            connect=CONNECT_TIMEOUT_SECONDS,
            read=STREAM_READ_TIMEOUT_SECONDS,
        )
        try:
            with self._http.stream("GET", path, timeout=timeout) as response:
                if response.is_error:
                    response.read()
                    raise ApiError(_message(response), response.status_code)
                yield from parse_sse(response.iter_lines())
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc


def parse_sse(lines: Iterator[str]) -> Iterator[StreamEvent]:
    """Server-Sent Events from the lines of a `text/event-stream` (comments skipped)."""
    name = "message"
    data: list[str] = []
    ident: str | None = None
    for line in lines:
        if not line:
            if data:
                yield StreamEvent(name=name, data=_decode("\n".join(data)), id=ident)
            name, data, ident = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            ident = value
    if data:
        yield StreamEvent(name=name, data=_decode("\n".join(data)), id=ident)


def _decode(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
