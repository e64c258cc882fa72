"""Tokens on the CLI's side: which one it sends, the one `orc up` saves, and the token
commands that write straight into the state store (so the first token needs no token).

The CLI sends `ORC_API_TOKEN`, else `ORC_ADMIN_TOKEN`, else the token in `ORC_TOKEN_FILE`
(`.orc/token`), which `orc up` writes when no token is configured.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from api.credentials import Role, add_token, find_token
from common.db.engine import make_engine, make_sessionmaker
from common.db.models import ApiToken
from common.errors import OrcError
from common.settings import Settings

UP_TOKEN_NAME = "orc up"


class StoreError(OrcError):
    """The state store could not be read or written (unreachable, or not migrated)."""


@dataclass(frozen=True)
class NewToken:
    id: uuid.UUID
    name: str
    role: Role
    token: str


def read_token_file(path: Path) -> str | None:
    try:
        token = path.expanduser().read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return token or None


def write_token_file(path: Path, token: str) -> None:
    """Save a token readable by its owner only (0600), replacing any before it."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    path.chmod(0o600)  # O_CREAT's mode applies to a new file only


def configured_token(settings: Settings) -> str | None:
    """A token given in the environment: `ORC_API_TOKEN`, else `ORC_ADMIN_TOKEN`."""
    for secret in (settings.api_token, settings.admin_token):
        if secret is not None and secret.get_secret_value():
            return secret.get_secret_value()
    return None


def cli_token(settings: Settings) -> str | None:
    """The token the CLI sends: configured, else saved by `orc up`, else none."""
    return configured_token(settings) or read_token_file(settings.token_file)


def _store_error(settings: Settings, exc: SQLAlchemyError) -> StoreError:
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return StoreError(
        f"the state store at {settings.database_url} cannot be used ({reason}); "
        "is it migrated (`orc db upgrade`)?"
    )


async def create_token(settings: Settings, name: str, role: Role) -> NewToken:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            row, clear = add_token(session, name, role)
            await session.commit()
            return NewToken(id=row.id, name=row.name, role=role, token=clear)
    except SQLAlchemyError as exc:
        raise _store_error(settings, exc) from exc
    finally:
        await engine.dispose()


async def list_tokens(settings: Settings) -> Sequence[ApiToken]:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            statement = select(ApiToken).order_by(ApiToken.created_at.desc())
            return (await session.scalars(statement)).all()
    except SQLAlchemyError as exc:
        raise _store_error(settings, exc) from exc
    finally:
        await engine.dispose()


async def revoke_token(settings: Settings, token_id: uuid.UUID) -> bool:
    """Revoke a token; False if there is none with this id."""
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            row = await session.get(ApiToken, token_id)
            if row is None:
                return False
            row.revoked = True
            await session.commit()
            return True
    except SQLAlchemyError as exc:
        raise _store_error(settings, exc) from exc
    finally:
        await engine.dispose()


async def _is_valid(settings: Settings, clear: str) -> bool:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            row = await find_token(session, clear)
            return row is not None and not row.revoked
    except SQLAlchemyError as exc:
        raise _store_error(settings, exc) from exc
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class UpToken:
    """The token `orc up` gives the CLI and the demo, and whether it was just made."""

    token: str | None
    made: bool = False
    saved_in: Path | None = None


async def ensure_up_token(settings: Settings) -> UpToken:
    """For `orc up` (the store is migrated): the configured token if there is one; else
    the saved one if the store still honours it; else a new admin token, saved (0600)."""
    configured = configured_token(settings)
    if configured is not None:
        return UpToken(configured)
    saved = read_token_file(settings.token_file)
    if saved is not None and await _is_valid(settings, saved):
        return UpToken(saved, saved_in=settings.token_file)
    made = await create_token(settings, UP_TOKEN_NAME, Role.ADMIN)
    write_token_file(settings.token_file, made.token)
    return UpToken(made.token, made=True, saved_in=settings.token_file)
