"""`/health`: liveness of the API process."""

from __future__ import annotations

from litestar import get

from api.auth import PUBLIC
from api.schemas import Health


@get("/health", summary="Liveness probe", tags=["health"], opt=PUBLIC)
async def health() -> Health:
    """200 while the process serves requests; it does not probe the database or broker.
    Needs no token."""
    return Health()
