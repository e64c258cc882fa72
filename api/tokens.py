"""`/tokens`: API tokens, for admins. A new token is shown once, in the creation answer;
the store keeps only its SHA-256 digest. Deleting a token revokes it: the record stays
(listed with `revoked: true`) so its name and last use remain readable."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.params import JSONBody
from sqlalchemy import Select, select

from api.auth import SECURITY, allow
from api.credentials import Principal, Role, add_token
from api.dependencies import PageDep, PathId, SessionDep
from api.errors import Conflict, error_responses, not_found
from api.pagination import paginate
from api.schemas import TokenCreated, TokenIn, TokenOut, TokenPage
from common.db.models import ApiToken


class TokenController(Controller):
    path = "/tokens"
    tags = ["tokens"]
    security = SECURITY
    guards = allow(Role.ADMIN)

    @post("/", summary="Create a token", responses=error_responses(403, 413, 422))
    async def create_token(self, data: JSONBody[TokenIn], session: SessionDep) -> TokenCreated:
        """A new token with a role. The answer holds the token itself, the only time it
        is shown: keep it."""
        row, clear = add_token(session, data.name, data.role)
        await session.commit()
        return TokenCreated(**TokenOut.model_validate(row).model_dump(), token=clear)

    @get("/", summary="List tokens", responses=error_responses(403))
    async def list_tokens(self, session: SessionDep, page: PageDep) -> TokenPage:
        """Every token's record, newest first; never the tokens themselves."""
        statement: Select[ApiToken] = select(ApiToken).order_by(
            ApiToken.created_at.desc(), ApiToken.id.desc()
        )
        rows, total = await paginate(session, statement, page)
        return TokenPage(
            items=[TokenOut.model_validate(r) for r in rows],
            limit=page.limit,
            offset=page.offset,
            total=total,
        )

    @delete("/{token_id:uuid}", summary="Revoke a token", responses=error_responses(403, 404, 409))
    async def revoke_token(
        self, token_id: PathId, session: SessionDep, request: Request[Principal, Any, Any]
    ) -> None:
        """From now on the token is refused (401). Revoking twice is no error. A token
        cannot revoke itself (409): that would lock its holder out by mistake."""
        row = await session.get(ApiToken, token_id)
        if row is None:
            raise not_found("token", token_id)
        if request.user.token_id == token_id:
            raise Conflict(detail="a token cannot revoke itself; use another admin token")
        row.revoked = True
        await session.commit()
