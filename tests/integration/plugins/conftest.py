"""Real services for the plugins: a fresh PostgreSQL database, moto's S3 server."""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import PG_ADMIN_DSN, _require


def _admin(sql: str) -> None:
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(PG_ADMIN_DSN, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(sql)


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A libpq URI of a database made for this test (dropped after it)."""
    _require(PG_ADMIN_DSN, 5432, "PostgreSQL")
    name = f"orc_plugin_{uuid.uuid4().hex[:12]}"
    _admin(f'CREATE DATABASE "{name}"')
    parts = urlsplit(PG_ADMIN_DSN)
    try:
        yield f"postgresql://{parts.netloc}/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement in its own transaction; the rows it returns, if any."""
    import adbc_driver_postgresql.dbapi as pg

    with pg.connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.execute(statement, params or None)
        try:
            return [tuple(row) for row in cursor.fetchall()]
        except Exception:
            return []


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    def url(self, prefix: str) -> str:
        host = urlsplit(self.endpoint).netloc
        # moto takes any credentials; in the URI they need no AWS_* variables.
        return (
            f"s3://testing:testing@{self.bucket}/{prefix}"
            f"?endpoint_override={host}&scheme=http&region=us-east-1"
        )


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1, for the session (skips if moto is missing on a
    laptop; fails under CI=true, like the other real services)."""
    try:
        server_module = importlib.import_module("moto.server")
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"moto[server] is not installed (CI requires it): {exc}")
        pytest.skip(f"moto[server] is not installed: {exc}")
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint: str) -> S3:
    """A fresh bucket on the moto server."""
    import pyarrow.fs as pafs

    bucket = f"orc-{uuid.uuid4().hex[:12]}"
    host = urlsplit(moto_endpoint).netloc
    fs = pafs.S3FileSystem(
        endpoint_override=host,
        scheme="http",
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
        allow_bucket_creation=True,
    )
    fs.create_dir(bucket)
    return S3(moto_endpoint, bucket)
