"""Trace propagation where no span is recorded: the consumed message's trace context is
passed on as it came, without a span (common/tracing.py)."""

from __future__ import annotations

import pytest

from common import tracing

PARENT = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"


@pytest.fixture
def not_recording(monkeypatch: pytest.MonkeyPatch) -> None:
    # Another test module may have installed an SDK provider for the whole process.
    monkeypatch.setattr(tracing, "recording", lambda: False)


@pytest.mark.usefixtures("not_recording")
def test_a_consumer_passes_the_message_trace_on() -> None:
    assert tracing.trace_headers() == {}
    with tracing.consuming("worker EXTRACT csv", {"traceparent": PARENT.encode(), "x": 1}):
        assert tracing.trace_headers() == {"traceparent": PARENT}
        with tracing.starting("worker LOAD duckdb"):
            assert tracing.trace_headers() == {"traceparent": PARENT}
    assert tracing.trace_headers() == {}


@pytest.mark.usefixtures("not_recording")
def test_a_message_without_a_trace_passes_none_on() -> None:
    with tracing.consuming("coordinator JobDue", None):
        assert tracing.trace_headers() == {}
