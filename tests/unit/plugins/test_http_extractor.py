"""The `http` extractor against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from common.errors import PermanentError, TransientError
from plugins.base import TaskContext, validate_config
from plugins.http_extractor import HttpConfig, HttpExtractor
from plugins.netguard import AddressNotAllowed
from tests.unit.plugins.httpserver import Request, Response, Server, serve
from tests.unit.plugins.support import config, context

LOCAL = ("127.0.0.1",)


@pytest.fixture
def server() -> Iterator[Server]:
    with serve() as running:
        yield running


def extractor(
    tmp_path: Path,
    state: dict[str, Any] | None = None,
    allowlist: tuple[str, ...] = LOCAL,
    **raw: Any,
) -> HttpExtractor:
    return HttpExtractor(
        config(HttpConfig, tmp_path, **raw), context(tmp_path, state=state, allowlist=allowlist)
    )


def rows(ex: HttpExtractor) -> dict[str, list[Any]]:
    return pa.Table.from_batches(list(ex.extract())).to_pydict()


def test_records_at_a_path_with_headers_and_params(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(json={"data": {"items": [{"id": 1, "name": "a"}, {"id": 2}]}}))
    ex = extractor(
        tmp_path,
        url=server.url("/items"),
        records_path="data.items",
        headers={"X-Client": "orc"},
        params={"limit": 2, "active": True},
    )
    assert rows(ex) == {"id": [1, 2], "name": ["a", None]}
    (request,) = server.requests
    assert request.headers["x-client"] == "orc"
    assert request.query == {"limit": "2", "active": "true"}


def test_post_with_a_json_body(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(json=[{"echo": json.loads(r.body)["q"]}]))
    ex = extractor(tmp_path, url=server.url("/search"), method="POST", json_body={"q": "x"})
    assert rows(ex) == {"echo": ["x"]}
    assert server.requests[0].method == "POST"


def test_nested_values_become_json_text_or_arrow_types(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(json=[{"id": 1, "tags": ["a"], "geo": {"lat": 1.5}}]))
    assert rows(extractor(tmp_path, url=server.url("/"))) == {
        "id": [1],
        "tags": ['["a"]'],
        "geo": ['{"lat":1.5}'],
    }
    table = pa.Table.from_batches(
        list(extractor(tmp_path, url=server.url("/"), nested="arrow").extract())
    )
    assert table.schema.field("tags").type == pa.list_(pa.string())
    assert table.column("geo").to_pylist() == [{"lat": 1.5}]


def pages(request: Request) -> Response:
    page = int(request.query.get("page", "1"))
    data = {1: [{"id": 1}, {"id": 2}], 2: [{"id": 3}], 3: []}[page]
    return Response(json={"results": data, "total_pages": 2})


def test_page_number_pagination_stops_on_an_empty_page(server: Server, tmp_path: Path) -> None:
    server.route(pages)
    ex = extractor(
        tmp_path, url=server.url("/p"), records_path="results", pagination={"type": "page_number"}
    )
    assert rows(ex) == {"id": [1, 2, 3]}
    assert [r.query["page"] for r in server.requests] == ["1", "2", "3"]


def test_page_number_pagination_stops_on_total_pages(server: Server, tmp_path: Path) -> None:
    server.route(pages)
    ex = extractor(
        tmp_path,
        url=server.url("/p"),
        records_path="results",
        pagination={"type": "page_number", "total_pages_path": "total_pages"},
    )
    assert rows(ex) == {"id": [1, 2, 3]}
    assert len(server.requests) == 2


def test_page_size_stops_on_a_short_page(server: Server, tmp_path: Path) -> None:
    server.route(pages)
    ex = extractor(
        tmp_path,
        url=server.url("/p"),
        records_path="results",
        pagination={"type": "page_number", "page_size_param": "per_page", "page_size": 2},
    )
    assert rows(ex) == {"id": [1, 2, 3]}
    assert [(r.query["page"], r.query["per_page"]) for r in server.requests] == [
        ("1", "2"),
        ("2", "2"),
    ]


def test_next_url_in_the_body_relative_or_absolute(server: Server, tmp_path: Path) -> None:
    def handle(r: Request) -> Response:
        if r.path == "/a":
            return Response(json={"items": [{"id": 1}], "links": {"next": "/b?x=1"}})
        if r.path == "/b":
            return Response(json={"items": [{"id": 2}], "links": {"next": server.url("/c")}})
        return Response(json={"items": [{"id": 3}], "links": {"next": None}})

    server.route(handle)
    ex = extractor(
        tmp_path,
        url=server.url("/a"),
        params={"q": "1"},
        records_path="items",
        pagination={"type": "next_url", "next_url_path": "links.next"},
    )
    assert rows(ex) == {"id": [1, 2, 3]}
    assert [(r.path, r.query) for r in server.requests] == [
        ("/a", {"q": "1"}),
        ("/b", {"x": "1"}),
        ("/c", {}),
    ]


def test_next_url_in_a_link_header(server: Server, tmp_path: Path) -> None:
    def handle(r: Request) -> Response:
        if r.path == "/a":
            return Response(json=[{"id": 1}], headers={"Link": f'<{server.url("/b")}>; rel="next"'})
        return Response(json=[{"id": 2}])

    server.route(handle)
    ex = extractor(tmp_path, url=server.url("/a"), pagination={"type": "next_url"})
    assert rows(ex) == {"id": [1, 2]}


def test_a_next_link_loop_is_a_permanent_error(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(json={"items": [{"id": 1}], "next": "/a"}))
    ex = extractor(
        tmp_path,
        url=server.url("/a"),
        records_path="items",
        pagination={"type": "next_url", "next_url_path": "next"},
    )
    with pytest.raises(PermanentError, match="pagination loops"):
        rows(ex)


def test_a_next_link_to_another_scheme_is_refused(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(json={"items": [{"id": 1}], "next": "file:///etc/passwd"}))
    ex = extractor(
        tmp_path,
        url=server.url("/a"),
        records_path="items",
        pagination={"type": "next_url", "next_url_path": "next"},
    )
    with pytest.raises(PermanentError, match="only http and https"):
        rows(ex)


def test_cursor_pagination(server: Server, tmp_path: Path) -> None:
    def handle(r: Request) -> Response:
        after = r.query.get("after")
        if after is None:
            return Response(json={"data": [{"id": 1}], "meta": {"next": "c1"}})
        if after == "c1":
            return Response(json={"data": [{"id": 2}], "meta": {"next": "c2"}})
        return Response(json={"data": [{"id": 3}], "meta": {"next": None}})

    server.route(handle)
    ex = extractor(
        tmp_path,
        url=server.url("/c"),
        records_path="data",
        pagination={"type": "cursor", "cursor_path": "meta.next", "cursor_param": "after"},
    )
    assert rows(ex) == {"id": [1, 2, 3]}
    assert [r.query.get("after") for r in server.requests] == [None, "c1", "c2"]


def test_max_pages_bounds_an_endless_api(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(json={"d": [{"id": 1}], "n": f"/x{len(server.requests)}"}))
    ex = extractor(
        tmp_path,
        url=server.url("/x"),
        records_path="d",
        max_pages=3,
        pagination={"type": "next_url", "next_url_path": "n"},
    )
    with pytest.raises(PermanentError, match="more than max_pages=3"):
        rows(ex)


def incremental_api(r: Request) -> Response:
    since = r.query.get("since")
    data = [
        {"id": 1, "updated": "2024-01-01T00:00:00Z"},
        {"id": 2, "updated": "2024-03-01T00:00:00Z"},
    ]
    return Response(json=[d for d in data if since is None or d["updated"] > since])


def test_incremental_sends_the_last_cursor_and_keeps_the_new_maximum(
    server: Server, tmp_path: Path
) -> None:
    server.route(incremental_api)
    raw = {"url": server.url("/i"), "incremental": {"cursor_field": "updated", "param": "since"}}
    first = extractor(tmp_path, **raw)
    assert rows(first)["id"] == [1, 2]
    assert first.context.state_update == {"cursor:updated": "2024-03-01T00:00:00Z"}
    assert "since" not in server.requests[0].query

    second = extractor(tmp_path, state=first.context.state_update, **raw)
    assert list(second.extract()) == []
    assert server.requests[1].query["since"] == "2024-03-01T00:00:00Z"
    assert second.context.state_update == {}  # nothing new: the state stays


def test_incremental_initial_value(server: Server, tmp_path: Path) -> None:
    server.route(incremental_api)
    ex = extractor(
        tmp_path,
        url=server.url("/i"),
        incremental={"cursor_field": "updated", "param": "since", "initial_value": "2024-02-01"},
    )
    assert rows(ex)["id"] == [2]


def test_429_is_retried_after_retry_after(server: Server, tmp_path: Path) -> None:
    def handle(r: Request) -> Response:
        if len(server.requests) < 3:
            return Response(429, json={"error": "slow down"}, headers={"Retry-After": "0.2"})
        return Response(json=[{"id": 1}])

    server.route(handle)
    started = time.monotonic()
    assert rows(extractor(tmp_path, url=server.url("/r")))["id"] == [1]
    assert len(server.requests) == 3
    assert time.monotonic() - started >= 0.4


def test_503_past_max_retries_is_transient(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(503, json={}, headers={"Retry-After": "0"}))
    with pytest.raises(TransientError, match="HTTP 503 after 3 tries"):
        rows(extractor(tmp_path, url=server.url("/r"), max_retries=2))
    assert len(server.requests) == 3


def test_a_retry_after_longer_than_allowed_is_transient_at_once(
    server: Server, tmp_path: Path
) -> None:
    server.route(lambda r: Response(429, json={}, headers={"Retry-After": "3600"}))
    with pytest.raises(TransientError, match="asked to wait 3600s"):
        rows(extractor(tmp_path, url=server.url("/r")))
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, PermanentError),
        (401, PermanentError),
        (404, PermanentError),
        (408, TransientError),
        (500, TransientError),
        (502, TransientError),
    ],
)
def test_status_codes_map_to_retry_classes(
    server: Server, tmp_path: Path, status: int, error: type[Exception]
) -> None:
    server.route(lambda r: Response(status, json={"error": "nope"}))
    with pytest.raises(error, match=f"HTTP {status}"):
        rows(extractor(tmp_path, url=server.url("/s")))


def test_a_slow_server_is_a_transient_timeout(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(json=[], delay=2.0))
    with pytest.raises(TransientError, match=r"no answer within 0\.3s"):
        rows(extractor(tmp_path, url=server.url("/slow"), timeout_seconds=0.3))


def test_a_refused_connection_is_transient(tmp_path: Path) -> None:
    with serve() as gone:
        url = gone.url("/x")
    with pytest.raises(TransientError, match="ConnectError"):
        rows(extractor(tmp_path, url=url))


def test_not_json_and_wrong_shapes_are_permanent(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(text="<html>hi</html>"))
    with pytest.raises(PermanentError, match="not JSON"):
        rows(extractor(tmp_path, url=server.url("/")))
    server.route(lambda r: Response(json={"data": {"items": 5}}))
    with pytest.raises(PermanentError, match=r"data\.items is a int, not a list"):
        rows(extractor(tmp_path, url=server.url("/"), records_path="data.items"))
    server.route(lambda r: Response(json={"rows": []}))
    with pytest.raises(PermanentError, match=r"no 'data' in the answer \(it has: rows\)"):
        rows(extractor(tmp_path, url=server.url("/"), records_path="data"))
    server.route(lambda r: Response(json=[{"v": 1}, {"v": "one"}]))
    with pytest.raises(PermanentError, match="field 'v' mixes types"):
        rows(extractor(tmp_path, url=server.url("/")))


def test_loopback_is_refused_without_the_allowlist(server: Server, tmp_path: Path) -> None:
    with pytest.raises(AddressNotAllowed, match=r"127\.0\.0\.1.*ORC_HTTP_ALLOWLIST"):
        rows(extractor(tmp_path, allowlist=(), url=server.url("/")))
    assert server.requests == []
    with pytest.raises(AddressNotAllowed):
        rows(extractor(tmp_path, allowlist=("10.0.0.0/8",), url=server.url("/")))
    server.route(lambda r: Response(json=[{"id": 1}]))
    assert rows(extractor(tmp_path, allowlist=("127.0.0.0/8",), url=server.url("/")))["id"] == [1]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.1.2.3/",
        "http://192.168.0.1:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/",
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_private_addresses_are_refused_before_any_connection(tmp_path: Path, url: str) -> None:
    # Refused while resolving: no packet is sent to these addresses.
    with pytest.raises(AddressNotAllowed):
        rows(extractor(tmp_path, allowlist=(), url=url))


def test_a_redirect_to_a_private_address_is_refused(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(302, json={}, headers={"Location": "http://10.9.9.9/steal"}))
    with pytest.raises(AddressNotAllowed, match=r"10\.9\.9\.9"):
        rows(extractor(tmp_path, url=server.url("/")))


def test_secret_headers_are_not_sent_to_another_origin(tmp_path: Path) -> None:
    with serve() as main, serve() as other:
        other.route(lambda r: Response(json=[{"id": 2}]))

        def handle(r: Request) -> Response:
            return Response(json={"items": [{"id": 1}], "next": other.url("/p2")})

        main.route(handle)
        ex = extractor(
            tmp_path,
            url=main.url("/p1"),
            records_path="items",
            secret_headers={"X-Api-Key": "k-123"},
            pagination={"type": "next_url", "next_url_path": "next"},
        )
        # The second page has no "items": a later page without records ends the data.
        assert rows(ex)["id"] == [1]
        assert main.requests[0].headers["x-api-key"] == "k-123"
        assert "x-api-key" not in other.requests[0].headers


def test_secret_params_are_sent_but_not_shown_in_errors(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(404, json={"error": "unknown"}))
    with pytest.raises(PermanentError) as caught:
        rows(extractor(tmp_path, url=server.url("/x"), secret_params={"api_key": "tok-999"}))
    assert server.requests[0].query["api_key"] == "tok-999"
    assert "tok-999" not in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        {"url": "file:///etc/passwd"},
        {"url": "ftp://example.com/x"},
        {"url": "http:///nohost"},
        {"url": "https://e.com", "method": "DELETE"},
        {"url": "https://e.com", "pagination": {"type": "magic"}},
        {"url": "https://e.com", "pagination": {"type": "cursor"}},
        {"url": "https://e.com", "timeout_seconds": 0},
        {"url": "https://e.com", "incremental": {"cursor_field": "u"}},
    ],
)
def test_bad_configs_are_rejected(tmp_path: Path, raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_config(HttpConfig, raw, tmp_path)


def test_secret_headers_may_come_from_the_environment(server: Server, tmp_path: Path) -> None:
    server.route(lambda r: Response(json=[{"auth": r.headers.get("authorization")}]))
    parsed = validate_config(
        HttpConfig,
        {"url": server.url("/"), "secret_headers_env": {"Authorization": "API_TOKEN"}},
        tmp_path,
        environ={"API_TOKEN": "Bearer xyz"},
    )
    assert isinstance(parsed, HttpConfig)
    ctx: TaskContext = context(tmp_path, allowlist=LOCAL)
    assert rows(HttpExtractor(parsed, ctx)) == {"auth": ["Bearer xyz"]}
