"""Bearer-token authentication (a middleware) and role checks (guards).

Every route needs `Authorization: Bearer <token>` unless its handler opts out with
`opt=PUBLIC` (`/health`): a new endpoint is closed by default. The middleware finds the
token by its SHA-256 digest and puts a `Principal` on the connection; a missing, unknown,
revoked or malformed token is answered 401 with `WWW-Authenticate: Bearer`. A handler
then states the least role it needs with `allow(Role.X)`: a weaker token gets 403.
Handlers without a guard are open to every valid token (a viewer's reads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.credentials import Principal, Role, find_token, role_of
from common.events import utcnow

log = logging.getLogger(__name__)

SCHEME_NAME = "bearerToken"
PUBLIC_KEY = "exclude_from_auth"
PUBLIC: dict[str, Any] = {PUBLIC_KEY: True}
"""`opt` of a handler that needs no token (`/health`, a metrics endpoint)."""

SECURITY: list[SecurityRequirement] = [{SCHEME_NAME: []}]
"""The OpenAPI security requirement of every protected route."""

SECURITY_COMPONENTS = Components(
    security_schemes={
        SCHEME_NAME: SecurityScheme(
            type="http",
            scheme="bearer",
            description="An API token (`orc tokens create`, `POST /tokens`, "
            "`ORC_ADMIN_TOKEN`); roles: viewer < operator < admin.",
        )
    }
)

# `last_used_at` is a hint for humans; writing it on every request would make each read
# a write (and on SQLite, a wait for the one writer).
LAST_USED_PRECISION = timedelta(minutes=1)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="orc"'}


def _unauthorized(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail=detail, headers=_CHALLENGE)


def bearer_token(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; 401 if there is none."""
    if not header:
        raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("the Authorization header must be 'Bearer <token>'")
    return token


class BearerAuthMiddleware(AbstractAuthenticationMiddleware):
    """Resolves the bearer token to a `Principal` (`request.user`) or answers 401."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        clear = bearer_token(connection.headers.get("authorization"))
        sessionmaker = cast(async_sessionmaker[AsyncSession], connection.app.state.sessionmaker)
        async with sessionmaker() as session:
            row = await find_token(session, clear)
            role = role_of(row) if row is not None else None
            if row is None or row.revoked or role is None:
                raise _unauthorized("invalid or revoked token")
            principal = Principal(token_id=row.id, name=row.name, role=role)
            now = utcnow()
            if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
                row.last_used_at = now
                try:
                    await session.commit()
                except SQLAlchemyError:
                    log.warning("could not record the use of token %s", row.id, exc_info=True)
        return AuthenticationResult(user=principal, auth=row.id)


RouteGuard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]


class RoleGuard:
    """A Litestar guard: the request's token must have at least `role`."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __call__(self, connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = connection.scope.get("user")
        if not isinstance(principal, Principal):
            # Only a route that opted out of authentication gets here without one.
            raise _unauthorized("missing bearer token (Authorization: Bearer <token>)")
        if not principal.role.allows(self.role):
            raise PermissionDeniedException(
                detail=f"a {principal.role.value} token may not do this; "
                f"it needs the {self.role.value} role"
            )

    def __repr__(self) -> str:
        return f"RoleGuard({self.role.value})"


def allow(role: Role) -> list[RouteGuard]:
    """`guards=` of a handler that needs at least `role`."""
    return [RoleGuard(role)]
