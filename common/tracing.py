"""OpenTelemetry tracing: one trace per run, carried across processes in message headers.

The trigger (API request, scheduler tick, or the first handler of an outside event) starts
the trace; every publish injects the current context (W3C `traceparent`) into the message
headers, and every consumer continues from them. Exporting is off unless the standard
`OTEL_EXPORTER_OTLP_ENDPOINT` is set; propagation works either way.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind

TRACER = "orc"


def configure_tracing(service_name: str) -> None:
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def recording() -> bool:
    """Whether this process records spans (an SDK tracer provider is installed)."""
    return not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


_PASSED_ON: ContextVar[dict[str, str] | None] = ContextVar("orc_trace_passed_on", default=None)
"""The trace headers of the message being consumed, in a process that records no spans."""


def carried(headers: Mapping[str, Any] | None) -> dict[str, str]:
    """The trace context a message's headers carry, as headers to pass on as they are.

    Where no span is recorded, a consumer's span is the producer's context again, so
    passing the headers on propagates the same trace without the cost of a span.
    """
    found = {}
    for name in _CARRIED:
        value = (headers or {}).get(name)
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            found[name] = value
    return found


_CARRIED = ("traceparent", "tracestate")


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


def trace_headers() -> dict[str, str]:
    """The current trace context as message headers (empty outside a span)."""
    passed_on = _PASSED_ON.get()
    if passed_on is not None:
        return dict(passed_on)
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def consuming(name: str, headers: Mapping[str, Any] | None, **attributes: Any) -> Iterator[Span]:
    """A consumer span continuing the trace named in a message's headers.

    Where no span is recorded it makes none: the headers are passed on as they came (what
    a non-recording span would propagate), at a tenth of the cost per message.
    """
    if not recording():
        token = _PASSED_ON.set(carried(headers))
        try:
            yield trace.INVALID_SPAN
        finally:
            _PASSED_ON.reset(token)
        return
    carrier = {k: v.decode() if isinstance(v, bytes) else v for k, v in (headers or {}).items()}
    carrier = {k: v for k, v in carrier.items() if isinstance(v, str)}
    parent = propagate.extract(carrier)
    attrs = {k: str(v) for k, v in attributes.items() if v is not None}
    with tracer().start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=attrs
    ) as span:
        yield span


@contextlib.contextmanager
def starting(name: str, **attributes: Any) -> Iterator[Span]:
    """A span that begins a trace (a trigger) or continues the current one."""
    if not recording():
        yield trace.INVALID_SPAN
        return
    attrs = {k: str(v) for k, v in attributes.items() if v is not None}
    with tracer().start_as_current_span(name, kind=SpanKind.PRODUCER, attributes=attrs) as span:
        yield span


def record_span(name: str, began: float, ended: float, **attributes: Any) -> None:
    """A finished span, under the current one, for work timed elsewhere (in a thread):
    `began` and `ended` are `time.monotonic()` readings."""
    if not recording():
        return
    attrs = {k: str(v) for k, v in attributes.items() if v is not None}
    offset = time.time_ns() - time.monotonic_ns()
    span = tracer().start_span(
        name, kind=SpanKind.INTERNAL, attributes=attrs, start_time=offset + int(began * 1e9)
    )
    span.end(end_time=offset + int(ended * 1e9))
