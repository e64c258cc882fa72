"""API tokens: made at random, shown once, stored only as their SHA-256 digest.

A token is 32 random bytes (URL-safe base64, prefixed `orc_` so a leaked one is easy to
spot). That much entropy needs no slow password hash: SHA-256 is enough to make the stored
digest useless to whoever reads the database, and fast enough to check on every request.

These functions take a session or sessionmaker, so the API and the `orc` CLI (which
writes tokens straight into the state store) share them.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.db.models import ApiToken

TOKEN_PREFIX = "orc_"


class Role(StrEnum):
    """What a token may do; each role may do everything the ones before it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's id, name and role."""

    token_id: uuid.UUID
    name: str
    role: Role


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The hex SHA-256 digest stored for a token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def add_token(session: AsyncSession, name: str, role: Role) -> tuple[ApiToken, str]:
    """Add a new token to the session (the caller commits); returns the row and the clear
    token, which exists nowhere else from then on."""
    clear = new_token()
    row = ApiToken(
        id=uuid.uuid4(), name=name, role=role.value, token_hash=hash_token(clear), revoked=False
    )
    session.add(row)
    return row, clear


async def find_token(session: AsyncSession, clear: str) -> ApiToken | None:
    """The stored row of a clear token, revoked or not; None if it was never issued."""
    statement = select(ApiToken).where(ApiToken.token_hash == hash_token(clear))
    return (await session.scalars(statement)).one_or_none()


async def seed_token(
    sessionmaker: async_sessionmaker[AsyncSession], clear: str, name: str, role: Role
) -> bool:
    """Register a token chosen outside (`ORC_ADMIN_TOKEN`) unless its digest is stored.

    Returns whether a row was added. A token that is stored but revoked stays revoked:
    revoking is how an admin retires a leaked seed without redeploying. Safe to call from
    several API processes at once (the unique digest decides).
    """
    digest = hash_token(clear)
    async with sessionmaker() as session:
        if await session.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest)):
            return False
        session.add(
            ApiToken(id=uuid.uuid4(), name=name, role=role.value, token_hash=digest, revoked=False)
        )
        try:
            await session.commit()
        except IntegrityError:
            return False
        return True


def role_of(row: ApiToken) -> Role | None:
    """The row's role, or None if the stored value is not one (then the token is refused)."""
    try:
        return Role(row.role)
    except ValueError:
        return None
