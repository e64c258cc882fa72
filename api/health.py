"""`/health`: liveness of the API process."""

from __future__ import annotations

from litestar import get

from api.schemas import Health


@get("/health", summary="Liveness probe", tags=["health"])
async def health() -> Health:
    """200 while the process serves requests; it does not probe the database or broker."""
    return Health()
