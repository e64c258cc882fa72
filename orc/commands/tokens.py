"""`orc tokens …`: API tokens, written straight into the state store (`ORC_DATABASE_URL`),
so the first token needs no token. A running API sees them at once."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import typer

from api.credentials import Role
from orc import tokens
from orc.commands.common import load_settings
from orc.output import Output, OutputOption, errors_as_lines, fail, print_json, stdout, table, when

app = typer.Typer(help="API tokens (in the state store).", no_args_is_help=True)


@app.command("create")
def create(
    role: Annotated[
        Role,
        typer.Option(
            help="viewer: reads; operator: reads, runs, cancels; admin: everything.",
            case_sensitive=False,
        ),
    ],
    name: Annotated[str, typer.Option(help="Who or what uses the token.")],
    output: OutputOption = Output.table,
) -> None:
    """Make a token and print it, the only time it is shown (only its hash is stored).

    The token alone goes to standard output, so `TOKEN=$(orc tokens create …)` works.
    """
    name = name.strip()
    if not name or len(name) > 200 or "\x00" in name:
        fail("the name must be 1 to 200 characters")
    settings = load_settings()
    with errors_as_lines():
        made = asyncio.run(tokens.create_token(settings, name, role))
    if output is Output.json:
        print_json({"id": str(made.id), "name": made.name, "role": made.role, "token": made.token})
        return
    typer.echo(made.token)
    typer.echo(f"made {made.role} token {made.name!r} ({made.id}); it is shown only now", err=True)


@app.command("list")
def list_tokens(output: OutputOption = Output.table) -> None:
    """Every token's record (never the tokens themselves)."""
    settings = load_settings()
    with errors_as_lines():
        rows = asyncio.run(tokens.list_tokens(settings))
    records = [
        {
            "id": str(r.id),
            "name": r.name,
            "role": r.role,
            "created_at": r.created_at.isoformat(),
            "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None,
            "revoked": r.revoked,
        }
        for r in rows
    ]
    if output is Output.json:
        print_json(records)
        return
    lines = [
        [
            str(r.id),
            r.name,
            r.role,
            when(r.created_at.isoformat()),
            when(r.last_used_at.isoformat() if r.last_used_at else None),
            "revoked" if r.revoked else "active",
        ]
        for r in rows
    ]
    stdout().print(table("tokens", ["ID", "NAME", "ROLE", "CREATED", "LAST USED", "STATE"], lines))


@app.command("revoke")
def revoke(
    token_id: Annotated[uuid.UUID, typer.Argument(help="The token's id (`orc tokens list`).")],
) -> None:
    """Refuse a token from now on."""
    settings = load_settings()
    with errors_as_lines():
        found = asyncio.run(tokens.revoke_token(settings, token_id))
    if not found:
        fail(f"no token with id {token_id}")
    stdout().print(f"revoked token {token_id}")
