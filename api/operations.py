"""`/metrics` (Prometheus, open like `/health`, as scrapers carry no token) and
`/asyncapi` (the bus contract, for any token holder)."""

from __future__ import annotations

from typing import Any

from litestar import Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import PUBLIC, SECURITY, allow
from api.credentials import Role
from api.dependencies import SettingsDep
from api.errors import error_responses
from common.asyncapi import asyncapi_document
from common.metrics import REGISTRY


@get(
    "/metrics",
    summary="Prometheus metrics",
    tags=["operations"],
    opt=PUBLIC,
    include_in_schema=False,
)
async def metrics() -> Response[bytes]:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@get(
    "/asyncapi",
    summary="The bus contract (AsyncAPI 3)",
    tags=["operations"],
    sync_to_thread=True,
    security=SECURITY,
    guards=allow(Role.VIEWER),
    responses=error_responses(),
)
def asyncapi(settings: SettingsDep) -> dict[str, Any]:
    """Every exchange, queue, routing key and event schema, generated from the topology."""
    return asyncapi_document(settings.namespace, broker_url=settings.broker_url)
