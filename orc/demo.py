"""The demo `orc up` starts with: a CSV in the data root and a job loading it into DuckDB.

The job is created through the REST API, like any user's job, with the token `orc up`
gives the CLI (it needs the admin role). The demo failing stops nothing: it is logged.
"""

from __future__ import annotations

import asyncio
import csv
import logging
from pathlib import Path

import httpx

from common.settings import Settings
from orc.client import api_url

log = logging.getLogger(__name__)

DEMO_JOB = "demo-cities"


def write_demo_csv(data_root: Path) -> Path:
    path = data_root / "demo" / "cities.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        rows = [
            ("Berlin", "DE", 3_878_100),
            ("Paris", "FR", 2_102_650),
            ("Madrid", "ES", 3_332_035),
            ("Rome", "IT", 2_748_109),
            ("Vienna", "AT", 2_005_760),
        ]
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["city", "country", "population"])
            writer.writerows(rows)
    return path


async def install_demo(settings: Settings, token: str | None = None) -> None:
    """Wait for the API, then create the demo job (if missing) and trigger it once."""
    root = settings.resolved_data_root
    write_demo_csv(root)
    base = api_url(settings.model_copy(update={"api_url": None}))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        await _install(base, headers)
    except httpx.HTTPError as exc:
        detail = exc.response.text if isinstance(exc, httpx.HTTPStatusError) else str(exc)
        log.error("the demo job could not be installed: %s %s", exc, detail)


async def _install(base: str, headers: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10, headers=headers) as client:
        for _ in range(100):
            try:
                if (await client.get("/health")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        listed = await client.get("/jobs", params={"name": DEMO_JOB})
        listed.raise_for_status()
        found = listed.json()["items"]
        if found:
            job = found[0]
        else:
            response = await client.post(
                "/jobs",
                json={
                    "name": DEMO_JOB,
                    "schedule": "0 * * * * *",
                    "extractor_type": "csv",
                    "extractor_config": {"path": "demo/cities.csv"},
                    "loader_type": "duckdb",
                    "loader_config": {"database": "demo/warehouse.duckdb", "table": "cities"},
                },
            )
            response.raise_for_status()
            job = response.json()
        triggered = await client.post(f"/jobs/{job['id']}/run")
        triggered.raise_for_status()
    log.info(
        "demo job %r (%s) runs every minute; manual run %s triggered. Try: orc runs list",
        DEMO_JOB,
        job["id"],
        triggered.json().get("id"),
    )
