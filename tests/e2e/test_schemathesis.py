"""Schemathesis against the running API, from its own OpenAPI document, with an admin
token: no request may earn a 5xx, and every answer must match the document (status
code, content type, body schema).

The two event streams are left out: they answer for as long as a run (or forever), which
a request-per-case fuzzer cannot wait for; `test_live.py` and `test_live_run.py` cover them.
The seed is fixed so that a failure reproduces; bounded examples keep the run under a
minute.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from pathlib import Path

import pytest

from common.settings import Settings
from tests.integration.api.conftest import ADMIN_TOKEN, served

pytestmark = pytest.mark.slow

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
EXAMPLES_PER_OPERATION = 10
TIME_BUDGET_SECONDS = 35


def _schemathesis() -> list[str]:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("schemathesis is not installed (it is a dev dependency)")
    return [found]


async def test_the_api_matches_its_openapi_document(
    sqlite_api_settings: Settings, tmp_path: Path
) -> None:
    async with served(sqlite_api_settings) as base:
        process = await asyncio.create_subprocess_exec(
            *_schemathesis(),
            "run",
            f"{base}/schema",
            "--header",
            f"Authorization: Bearer {ADMIN_TOKEN}",
            "--checks",
            ",".join(CHECKS),
            "--exclude-path-regex",
            "/events$",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--max-time",
            str(TIME_BUDGET_SECONDS),
            "--seed",
            "20261127",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), TIME_BUDGET_SECONDS + 40)
    report = output.decode(errors="replace")
    assert process.returncode == 0, report
    tested = re.search(r"Tested:\s+(\d+)", report)
    assert tested is not None and int(tested.group(1)) >= 19, report
