"""`orc tokens …` (straight into the store), the token `orc up` makes and saves, and a
cancelled run followed by a real `python -m orc` process (exit code 2)."""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from pathlib import Path

from pydantic import SecretStr

from common.settings import Settings
from orc import tokens
from orc.output import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK
from tests.integration.cli.conftest import Cli, one_error_line, write_job


async def test_tokens_made_by_the_cli_work_at_once(cli: Cli) -> None:
    made = await cli("tokens", "create", "--role", "viewer", "--name", "dashboard", token=None)
    assert made.exit_code == EXIT_OK, made.output
    viewer = made.stdout.strip()
    assert viewer.startswith("orc_") and "\n" not in viewer
    assert "viewer token 'dashboard'" in made.stderr and "shown only now" in made.stderr

    assert (await cli.json("jobs", "list", token=viewer))["total"] == 0
    assert (await cli("plugins", token=viewer)).exit_code == EXIT_OK
    write_job(cli.token_file.parent, "viewed")
    refused = await cli(
        "jobs", "create", "-f", str(cli.token_file.parent / "viewed.yaml"), token=viewer
    )
    assert refused.exit_code == EXIT_ERROR
    assert one_error_line(refused).startswith("error: 403 a viewer token may not do this")

    operator = await cli.json("tokens", "create", "--role", "operator", "--name", "ci", token=None)
    assert operator["role"] == "operator" and operator["token"].startswith("orc_")

    listed = await cli.json("tokens", "list", token=None)
    names = {t["name"]: t for t in listed}
    assert set(names) >= {"dashboard", "ci", "ORC_ADMIN_TOKEN"}
    assert all("token" not in t for t in listed)
    assert names["dashboard"]["last_used_at"] is not None

    revoked = await cli("tokens", "revoke", names["dashboard"]["id"], token=None)
    assert revoked.exit_code == EXIT_OK
    after = await cli("jobs", "list", token=viewer)
    assert after.exit_code == EXIT_ERROR
    assert "401" in one_error_line(after)


async def test_token_commands_check_their_input(cli: Cli) -> None:
    wrong_role = await cli("tokens", "create", "--role", "root", "--name", "x", token=None)
    assert wrong_role.exit_code == 2  # click's usage error
    empty = await cli("tokens", "create", "--role", "admin", "--name", " ", token=None)
    assert empty.exit_code == EXIT_ERROR
    unknown = await cli("tokens", "revoke", "00000000-0000-0000-0000-000000000000", token=None)
    assert one_error_line(unknown).startswith("error: no token with id")


async def test_token_commands_on_a_store_without_tables(cli: Cli, tmp_path: Path) -> None:
    cli.settings = cli.settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"}
    )
    result = await cli("tokens", "create", "--role", "admin", "--name", "x", token=None)
    assert result.exit_code == EXIT_ERROR
    assert "orc db upgrade" in one_error_line(result)


async def test_orc_up_makes_saves_and_reuses_a_token(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    settings = sqlite_settings.model_copy(update={"token_file": tmp_path / ".orc" / "token"})
    first = await tokens.ensure_up_token(settings)
    assert first.made and first.token
    assert first.saved_in == settings.token_file
    saved = settings.token_file.read_text().strip()
    assert saved == first.token
    assert stat.S_IMODE(os.stat(settings.token_file).st_mode) == 0o600
    assert tokens.cli_token(settings) == first.token

    again = await tokens.ensure_up_token(settings)
    assert (again.made, again.token) == (False, first.token)

    # A saved token that was revoked is replaced.
    listed = await tokens.list_tokens(settings)
    [row] = [t for t in listed if t.name == tokens.UP_TOKEN_NAME]
    assert await tokens.revoke_token(settings, row.id)
    replaced = await tokens.ensure_up_token(settings)
    assert replaced.made and replaced.token != first.token
    assert settings.token_file.read_text().strip() == replaced.token

    # A configured token wins, and nothing is made or saved.
    configured = settings.model_copy(update={"api_token": SecretStr("orc_given")})
    assert await tokens.ensure_up_token(configured) == tokens.UpToken("orc_given")
    assert tokens.cli_token(configured) == "orc_given"
    seeded = settings.model_copy(update={"admin_token": SecretStr("orc_seed")})
    assert tokens.cli_token(seeded) == "orc_seed"
    assert len(await tokens.list_tokens(settings)) == 2


async def test_a_cancelled_run_exits_2(cli_without_worker: Cli, tmp_path: Path) -> None:
    cli = cli_without_worker
    await cli("jobs", "create", "-f", str(write_job(tmp_path, "cities")))
    run_id = (await cli.json("jobs", "run", "cities"))["id"]
    async with cli.http() as http:
        async with asyncio.timeout(10):
            while (await http.get(f"/job_runs/{run_id}")).status_code == 404:
                await asyncio.sleep(0.05)

    # A real `orc` process follows the run while another command cancels it.
    env = {**os.environ, **{k: v for k, v in cli.env(None).items() if v is not None}}
    env["ORC_API_TOKEN"] = (
        await cli.json("tokens", "create", "--role", "viewer", "--name", "f", token=None)
    )["token"]
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orc",
        "runs",
        "follow",
        run_id,
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            assert follower.stdout is not None
            first = await follower.stdout.readline()
            assert first.decode().startswith("following run")
            cancelled = await cli("runs", "cancel", run_id)
            assert cancelled.exit_code == EXIT_OK, cancelled.output
            assert f"cancel of run {run_id} requested (it was PENDING)" in cancelled.stdout
            rest, errors = await follower.communicate()
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()
    assert follower.returncode == EXIT_CANCELLED, (rest, errors)
    assert "run CANCELLED" in rest.decode()
