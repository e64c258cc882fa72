"""`limit`/`offset` query parameters and the counting query behind every list answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

from litestar.params import QueryParameter
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

M = TypeVar("M")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
MAX_OFFSET = 10**12
"""Far beyond any list, and within the 64-bit integers the databases take."""


@dataclass(frozen=True)
class Pagination:
    limit: int
    offset: int


def provide_pagination(
    limit: Annotated[
        int, QueryParameter(ge=1, le=MAX_LIMIT, description=f"Items per page, 1 to {MAX_LIMIT}.")
    ] = DEFAULT_LIMIT,
    offset: Annotated[
        int,
        QueryParameter(ge=0, le=MAX_OFFSET, description="Matching items to skip before the page."),
    ] = 0,
) -> Pagination:
    return Pagination(limit=limit, offset=offset)


async def paginate(
    session: AsyncSession, statement: Select[M], page: Pagination
) -> tuple[Sequence[M], int]:
    """One page of `statement`'s rows (which must be ordered) and the count of all of them."""
    count = select(func.count()).select_from(statement.order_by(None).subquery())
    total = (await session.execute(count)).scalar_one()
    rows = (await session.scalars(statement.limit(page.limit).offset(page.offset))).all()
    return rows, int(total)
