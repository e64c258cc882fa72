"""Extract the records of a JSON API, page by page, incrementally if asked."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from common.errors import PermanentError, TransientError
from plugins.base import Extractor, PluginConfig

_RETRY_STATUSES = frozenset({429, 503})
_BODY_EXCERPT = 300
ParamValue = str | int | float | bool


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NextUrlPagination(_Part):
    """The response names the next page's URL: in its body at `next_url_path`, or (when
    that is not given) in a `Link: <...>; rel="next"` header."""

    type: Literal["next_url"]
    next_url_path: str | None = Field(default=None, description="e.g. `links.next`.")


class CursorPagination(_Part):
    """The response holds an opaque cursor, sent back as a query parameter."""

    type: Literal["cursor"]
    cursor_path: str = Field(description="Where the next cursor is in the body: `meta.next`.")
    cursor_param: str = Field(default="cursor", description="The query parameter to send it in.")


class PageNumberPagination(_Part):
    """Pages numbered from `start_page`, until a page has no records (or fewer than
    `page_size`, or `total_pages_path` says it was the last)."""

    type: Literal["page_number"]
    page_param: str = "page"
    start_page: int = Field(default=1, ge=0)
    page_size_param: str | None = None
    page_size: int | None = Field(default=None, ge=1)
    total_pages_path: str | None = None


Pagination = Annotated[
    NextUrlPagination | CursorPagination | PageNumberPagination, Field(discriminator="type")
]


class Incremental(_Part):
    """Fetch only what is new since the last completed run."""

    cursor_field: str = Field(description="Path in a record of a growing value: `updated_at`.")
    param: str = Field(description="Query parameter that sends the last run's maximum.")
    initial_value: str | int | float | None = Field(
        default=None, description="Sent on the first run (default: nothing, all records)."
    )


class HttpConfig(PluginConfig):
    """A JSON API to read.

    Example: `{"url": "https://api.example.com/v1/orders", "records_path": "data.items",
    "secret_headers_env": {"Authorization": "ORDERS_TOKEN"},
    "pagination": {"type": "next_url", "next_url_path": "links.next"},
    "incremental": {"cursor_field": "updated_at", "param": "updated_since"}}`.
    """

    url: str = Field(description="An http(s) URL.")
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict, description="Headers sent.")
    secret_headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Headers whose values are secret (`Authorization`); sent only to the "
        "URL's own origin.",
    )
    params: dict[str, ParamValue] = Field(default_factory=dict, description="Query parameters.")
    secret_params: dict[str, SecretStr] = Field(
        default_factory=dict, description="Query parameters whose values are secret (`api_key`)."
    )
    json_body: dict[str, Any] | None = Field(default=None, description="JSON body of a POST.")
    records_path: str | None = Field(
        default=None,
        description="Dotted path to the list of records in the body (`data.items`); none: "
        "the body is the list.",
    )
    pagination: Pagination | None = None
    incremental: Incremental | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=600, description="Per request.")
    max_retries: int = Field(
        default=5, ge=0, le=20, description="Retries of a 429 or 503 before giving up."
    )
    max_retry_wait_seconds: float = Field(
        default=60.0,
        ge=0,
        le=600,
        description="Longest wait for a `Retry-After`; a longer one fails the attempt as "
        "retryable, for the engine to retry later.",
    )
    max_pages: int = Field(default=10_000, ge=1, description="Stop with an error past this.")
    batch_rows: int = Field(default=10_000, ge=1, le=1_000_000, description="Rows per batch.")
    nested: Literal["json", "arrow"] = Field(
        default="json",
        description="Objects and lists in records: as JSON text (`json`) or Arrow structs "
        "and lists (`arrow`).",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        _check_url(value)
        return value


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"only http and https URLs are fetched, not {parts.scheme or url!r}")
    if not parts.hostname:
        raise ValueError("the URL has no host")


def _dig(body: Any, path: str | None) -> Any:
    """The value at a dotted path (`data.items`, `results.0.id`); None when absent."""
    if not path:
        return body
    value = body
    for key in path.split("."):
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def cursor_state_key(field: str) -> str:
    """The job-state key an incremental extract keeps its cursor under."""
    return f"cursor:{field}"


class HttpExtractor(Extractor[HttpConfig]):
    """Fetch pages with httpx, turn their records into Arrow batches.

    Errors: a 4xx (but 408 and 429) is a `PermanentError`; a 5xx, a timeout or a broken
    connection a `TransientError`; 429 and 503 are retried here after their `Retry-After`
    (at most `max_retries` times). Hosts resolving to internal addresses are refused
    unless allow-listed (`plugins.netguard`). Records with different keys are fine: a key
    missing from a record is null.
    """

    config_model = HttpConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        import httpx

        from plugins.netguard import Allowlist, GuardedTransport

        config = self.config
        origin = _origin(config.url)
        secret_names = {name.lower() for name in config.secret_headers}

        def strip_secrets_elsewhere(request: httpx.Request) -> None:
            # A redirect or next link to another origin must not carry our credentials.
            if _origin(str(request.url)) != origin:
                for name in secret_names:
                    request.headers.pop(name, None)

        headers = {**config.headers} | {
            name: value.get_secret_value() for name, value in config.secret_headers.items()
        }
        with httpx.Client(
            transport=GuardedTransport(Allowlist.parse(self.context.http_allowlist)),
            headers=headers,
            timeout=config.timeout_seconds,
            follow_redirects=True,
            trust_env=False,
            event_hooks={"request": [strip_secrets_elsewhere]},
        ) as client:
            yield from self._pages(client)

    def _pages(self, client: Any) -> Iterator[pa.RecordBatch]:
        config = self.config
        params: dict[str, Any] = dict(config.params) | {
            name: value.get_secret_value() for name, value in config.secret_params.items()
        }
        state_key = None
        if (incremental := config.incremental) is not None:
            state_key = cursor_state_key(incremental.cursor_field)
            since = self.context.state.get(state_key, incremental.initial_value)
            if since is not None:
                params[incremental.param] = since
        pagination = config.pagination
        page_number = 0
        if isinstance(pagination, PageNumberPagination):
            page_number = pagination.start_page
            if pagination.page_size_param and pagination.page_size:
                params[pagination.page_size_param] = pagination.page_size
        url: str | None = config.url
        request_params: dict[str, Any] | None = params
        seen = {config.url}
        buffer: list[dict[str, Any]] = []
        rows = 0
        newest: Any = None
        for index in range(config.max_pages):
            assert url is not None
            if isinstance(pagination, PageNumberPagination):
                assert request_params is not None
                request_params[pagination.page_param] = page_number
            body, response = self._fetch(client, url, request_params)
            records = self._records(body, url, first=index == 0)
            if state_key is not None and incremental is not None:
                newest = _newest(newest, records, incremental.cursor_field, url)
            buffer.extend(records)
            while len(buffer) >= config.batch_rows:
                batch, buffer = buffer[: config.batch_rows], buffer[config.batch_rows :]
                rows += len(batch)
                yield self._batch(batch, url)
                self.context.report_progress(rows)
            if pagination is None or not records:
                break
            if isinstance(pagination, NextUrlPagination):
                url = self._next_url(pagination, body, response, url)
                request_params = None  # a next link carries its own query
                if url is not None:
                    if url in seen:
                        raise PermanentError(f"pagination loops: {_safe(url)} was fetched before")
                    seen.add(url)
            elif isinstance(pagination, CursorPagination):
                cursor = _dig(body, pagination.cursor_path)
                if cursor in (None, ""):
                    url = None
                else:
                    assert request_params is not None
                    request_params[pagination.cursor_param] = cursor
            else:
                page_number += 1
                total = _dig(body, pagination.total_pages_path)
                last_by_total = (
                    isinstance(total, int) and page_number >= pagination.start_page + total
                )
                short = pagination.page_size is not None and len(records) < pagination.page_size
                if last_by_total or short:
                    url = None
            if url is None:
                break
        else:
            raise PermanentError(
                f"{config.url}: more than max_pages={config.max_pages} pages; raise max_pages "
                "if that is expected"
            )
        if buffer:
            rows += len(buffer)
            yield self._batch(buffer, url or config.url)
            self.context.report_progress(rows)
        if state_key is not None and newest is not None:
            self.context.update_state(state_key, newest)

    def _fetch(self, client: Any, url: str, params: dict[str, Any] | None) -> tuple[Any, Any]:
        import httpx

        config = self.config
        for attempt in range(config.max_retries + 1):
            try:
                response = client.request(config.method, url, params=params, json=config.json_body)
            except httpx.TimeoutException as exc:
                raise TransientError(
                    f"{_safe(url)}: no answer within {config.timeout_seconds}s ({exc})"
                ) from exc
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise PermanentError(f"{_safe(url)}: {exc}") from exc
            except httpx.TransportError as exc:
                raise TransientError(f"{_safe(url)}: {type(exc).__name__}: {exc}") from exc
            status = response.status_code
            if status in _RETRY_STATUSES:
                wait = _retry_after(response.headers.get("retry-after"), attempt)
                if attempt >= config.max_retries or wait > config.max_retry_wait_seconds:
                    raise TransientError(
                        f"{_safe(url)}: HTTP {status} after {attempt + 1} tries "
                        f"(asked to wait {wait:.0f}s)"
                    )
                time.sleep(wait)
                continue
            if status >= 400:
                excerpt = response.text[:_BODY_EXCERPT]
                message = f"{_safe(url)}: HTTP {status}: {excerpt}"
                if status >= 500 or status == 408:
                    raise TransientError(message)
                raise PermanentError(message)
            try:
                return response.json(), response
            except ValueError as exc:
                raise PermanentError(
                    f"{_safe(url)}: the answer is not JSON: {response.text[:_BODY_EXCERPT]!r}"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _records(self, body: Any, url: str, first: bool) -> list[dict[str, Any]]:
        path = self.config.records_path
        found = _dig(body, path)
        if found is None:
            if first and path:
                keys = ", ".join(body) if isinstance(body, dict) else type(body).__name__
                raise PermanentError(
                    f"{_safe(url)}: no {path!r} in the answer (it has: {keys}); check records_path"
                )
            return []  # a later page without records ends the data
        if isinstance(found, dict):
            found = [found]
        if not isinstance(found, list):
            raise PermanentError(
                f"{_safe(url)}: {path or 'the answer'} is a {type(found).__name__}, "
                "not a list of records"
            )
        return [item if isinstance(item, dict) else {"value": item} for item in found]

    def _batch(self, records: list[dict[str, Any]], url: str) -> pa.RecordBatch:
        names = list(dict.fromkeys(key for record in records for key in record))
        arrays = []
        for name in names:
            values = [record.get(name) for record in records]
            if self.config.nested == "json":
                values = [_flatten(value) for value in values]
            try:
                arrays.append(pa.array(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise PermanentError(
                    f"{_safe(url)}: field {name!r} mixes types in the records: {exc}"
                ) from exc
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def _next_url(
        self, pagination: NextUrlPagination, body: Any, response: Any, url: str
    ) -> str | None:
        if pagination.next_url_path:
            found = _dig(body, pagination.next_url_path)
        else:
            found = response.links.get("next", {}).get("url")
        if not found:
            return None
        if not isinstance(found, str):
            raise PermanentError(f"{_safe(url)}: the next page's URL is not text: {found!r}")
        following = urljoin(str(response.url), found)
        try:
            _check_url(following)
        except ValueError as exc:
            raise PermanentError(f"{_safe(url)}: next page {_safe(following)}: {exc}") from exc
        return following


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _safe(url: str) -> str:
    """The URL without its query (secret parameters live there) for error text."""
    return urlsplit(url)._replace(query="", fragment="").geturl()


def _flatten(value: Any) -> Any:
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


def _retry_after(header: str | None, attempt: int) -> float:
    """Seconds to wait: the header's (seconds or an HTTP date), else 1, 2, 4, ... s."""
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError):
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return float(min(2**attempt, 30))


def _newest(current: Any, records: list[dict[str, Any]], path: str, url: str) -> Any:
    for record in records:
        value = _dig(record, path)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise PermanentError(
                f"{_safe(url)}: cursor field {path!r} holds {value!r}; it must be a number "
                "or a text such as an ISO timestamp"
            )
        try:
            if current is None or value > current:
                current = value
        except TypeError as exc:
            raise PermanentError(
                f"{_safe(url)}: cursor field {path!r} mixes numbers and text"
            ) from exc
    return current
