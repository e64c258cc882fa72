"""`orc jobs …`, `orc runs …`, `orc tasks show`, `orc workers`, `orc plugins` against a
running engine, with tables for people and `--output json` for scripts."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import duckdb

from orc.output import EXIT_ERROR, EXIT_FAILED, EXIT_OK
from tests.integration.cli.conftest import Cli, one_error_line, write_job


async def test_job_lifecycle(cli: Cli, tmp_path: Path) -> None:
    created = await cli("jobs", "create", "-f", str(write_job(tmp_path, "cities")))
    assert created.exit_code == EXIT_OK, created.output
    assert created.stdout.startswith("created job cities (")

    from_json = await cli.json("jobs", "create", "-f", str(write_job(tmp_path, "b", ".json")))
    assert from_json["name"] == "b"
    assert from_json["retry_backoff_seconds"] == 5.0

    listed = await cli.json("jobs", "list")
    assert [j["name"] for j in listed["items"]] == ["b", "cities"]  # newest first
    table = await cli("jobs", "list")
    assert "cities" in table.stdout and "csv → duckdb" in table.stdout

    job = await cli.json("jobs", "show", "cities")
    assert await cli.json("jobs", "show", job["id"]) == job
    shown = await cli("jobs", "show", "cities")
    assert job["id"] in shown.stdout

    # PUT from a file (found by the name in it), then PATCH of a few fields.
    path = write_job(tmp_path, "cities", schedule="*/5 * * * *", max_attempts=2)
    replaced = await cli.json("jobs", "update", "-f", str(path))
    assert (replaced["schedule"], replaced["max_attempts"]) == ("*/5 * * * *", 2)
    partial = tmp_path / "partial.yaml"
    partial.write_text("retry_jitter: 0.5\ntimeout_seconds: 60\n")
    patched = await cli.json("jobs", "update", "cities", "-f", str(partial), "--patch")
    assert (patched["retry_jitter"], patched["timeout_seconds"]) == (0.5, 60.0)
    assert patched["schedule"] == "*/5 * * * *"

    assert (await cli.json("jobs", "disable", "cities"))["enabled"] is False
    disabled = await cli.json("jobs", "list", "--disabled")
    assert [j["name"] for j in disabled["items"]] == ["cities"]
    enabled = await cli("jobs", "enable", "cities")
    assert enabled.stdout.startswith("enabled job cities")

    deleted = await cli("jobs", "delete", "b")
    assert deleted.exit_code == EXIT_OK
    assert "deleted job b" in deleted.stdout
    assert [j["name"] for j in (await cli.json("jobs", "list"))["items"]] == ["cities"]


async def test_errors_are_one_line(cli: Cli, tmp_path: Path) -> None:
    missing = await cli("jobs", "show", "nobody")
    assert missing.exit_code == EXIT_ERROR
    assert one_error_line(missing) == "error: no job named 'nobody'"

    unknown_id = await cli("runs", "show", str(uuid.uuid4()))
    assert unknown_id.exit_code == EXIT_ERROR
    assert one_error_line(unknown_id).startswith("error: 404 no job run with id")

    bad = write_job(tmp_path, "bad", extractor_config={"path": "../../etc/passwd"})
    refused = await cli("jobs", "create", "-f", str(bad))
    assert refused.exit_code == EXIT_ERROR
    assert one_error_line(refused).startswith("error: 422 extractor_config.path")

    not_yaml = tmp_path / "broken.yaml"
    not_yaml.write_text("name: [unclosed\n")
    assert one_error_line(await cli("jobs", "create", "-f", str(not_yaml))).startswith(
        "error: " + str(not_yaml) + " is not valid YAML"
    )
    a_list = tmp_path / "list.json"
    a_list.write_text("[1, 2]")
    assert "must hold one mapping" in one_error_line(await cli("jobs", "create", "-f", str(a_list)))
    absent = await cli("jobs", "create", "-f", str(tmp_path / "absent.yaml"))
    assert one_error_line(absent).startswith("error: cannot read")

    no_token = await cli("jobs", "list", token=None)
    assert no_token.exit_code == EXIT_ERROR
    assert "401" in one_error_line(no_token)
    assert "ORC_API_TOKEN" in one_error_line(no_token)


async def test_the_api_unreachable_is_one_line(cli: Cli) -> None:
    cli.base_url = "http://127.0.0.1:9"
    result = await cli("jobs", "list")
    assert result.exit_code == EXIT_ERROR
    assert one_error_line(result).startswith("error: cannot reach the API at http://127.0.0.1:9")


async def test_run_follow_completed(cli: Cli, tmp_path: Path, data_root: Path) -> None:
    await cli("jobs", "create", "-f", str(write_job(tmp_path, "cities")))
    result = await cli("jobs", "run", "cities", "--follow")
    assert result.exit_code == EXIT_OK, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("started run ")
    assert lines[1].startswith("following run ")
    # One line per change, each with its time (how many depends on how fast the run is).
    assert any(line.endswith(" run COMPLETED") for line in lines), lines
    assert lines[-1].startswith("run COMPLETED after ")
    assert "EXTRACT 321 rows" in lines[-1] and "LOAD 321 rows" in lines[-1]
    with duckdb.connect(str(data_root / "out" / "cities.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from cities").fetchone() == (321,)

    # For scripts: one JSON object per event, the last one `finished`.
    scripted = await cli("jobs", "run", "cities", "--follow", "--output", "json")
    assert scripted.exit_code == EXIT_OK, scripted.output
    events = [json.loads(line) for line in scripted.stdout.splitlines()]
    assert events[0]["event"] == "snapshot"
    assert events[-1] == {"event": "finished", "data": events[-1]["data"]}
    assert events[-1]["data"]["status"] == "COMPLETED"


async def test_run_follow_failed(cli: Cli, tmp_path: Path) -> None:
    path = write_job(tmp_path, "lost", extractor_config={"path": "in/missing.csv"})
    await cli("jobs", "create", "-f", str(path))
    result = await cli("jobs", "run", "lost", "--follow")
    assert result.exit_code == EXIT_FAILED, result.output
    assert "run FAILED" in result.stdout
    assert "missing.csv" in result.stdout


async def test_reading_runs_tasks_workers_and_plugins(cli: Cli, tmp_path: Path) -> None:
    await cli("jobs", "create", "-f", str(write_job(tmp_path, "cities")))
    await cli("jobs", "create", "-f", str(write_job(tmp_path, "other")))
    key = "once-only"
    first = await cli.json("jobs", "run", "cities", "--idempotency-key", key)
    again = await cli.json("jobs", "run", "cities", "--idempotency-key", key)
    assert first["id"] == again["id"]
    assert (await cli("runs", "follow", first["id"])).exit_code == EXIT_OK
    assert (await cli("jobs", "run", "other", "--follow")).exit_code == EXIT_OK

    runs = await cli.json("runs", "list")
    assert runs["total"] == 2
    assert [r["status"] for r in runs["items"]] == ["COMPLETED", "COMPLETED"]
    of_cities = await cli.json("runs", "list", "--job", "cities", "--status", "completed")
    assert [r["id"] for r in of_cities["items"]] == [first["id"]]
    assert (await cli.json("runs", "list", "--status", "FAILED"))["items"] == []
    assert (await cli.json("runs", "list", "--since", "2999-01-01"))["items"] == []
    table = await cli("runs", "list", "--job", "cities")
    assert first["id"] in table.stdout and "cities" in table.stdout

    shown = await cli.json("runs", "show", first["id"])
    assert shown["run"]["status"] == "COMPLETED"
    assert [t["task_type"] for t in shown["tasks"]] == ["EXTRACT", "LOAD"]
    assert "EXTRACT" in (await cli("runs", "show", first["id"])).stdout

    task = await cli.json("tasks", "show", shown["tasks"][1]["id"])
    assert (task["task_type"], task["rows_processed"]) == ("LOAD", 321)
    assert "LOAD" in (await cli("tasks", "show", task["id"])).stdout

    finished = await cli("runs", "cancel", first["id"])
    assert finished.exit_code == EXIT_ERROR
    assert one_error_line(finished).startswith("error: 409")

    workers = await cli.json("workers")
    assert workers["total"] >= 1
    assert workers["items"][0]["status"] == "ACTIVE"
    assert "ACTIVE" in (await cli("workers")).stdout

    plugins = await cli.json("plugins")
    assert "csv" in {p["name"] for p in plugins["extractors"]}
    assert "path*" in (await cli("plugins")).stdout
