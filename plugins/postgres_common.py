"""What the PostgreSQL extractor and loader share: connection settings and error classes.

Both talk to PostgreSQL through ADBC's libpq driver (`adbc-driver-postgresql`): it streams
query results as Arrow batches (`COPY ... TO STDOUT (FORMAT binary)`) and bulk-loads Arrow
with binary `COPY ... FROM STDIN`, in C++, with no Python object per value. The driver is
imported only when a task runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from pydantic import Field, SecretStr

from common.errors import OrcError, PermanentError, TransientError
from plugins.base import PluginConfig

if TYPE_CHECKING:
    from adbc_driver_manager.dbapi import Connection

# SQLSTATE classes a retry may fix: connection trouble, a serialization failure or deadlock,
# too many connections or no disk, an administrator's shutdown, a lock wait that timed out.
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")
_TRANSIENT_STATES = frozenset({"55P03", "55006"})
_PERMANENT_STATES = frozenset({"08P01", "57014"})  # protocol violation; statement cancelled


class PostgresConnection(PluginConfig):
    """Where the database is. The DSN may hold a password: it is a secret (masked by the
    API, sealed on the bus); give it with `dsn_env` to keep it in the worker's environment,
    or keep the DSN plain and give only `password` (or `password_env`)."""

    dsn: SecretStr = Field(
        description="libpq URI (`postgresql://user@host:5432/db?sslmode=require`) or "
        "key=value string (`host=db dbname=warehouse user=etl`)."
    )
    password: SecretStr | None = Field(
        default=None, description="The password, when the DSN does not hold it."
    )

    def connection_uri(self) -> str:
        dsn = self.dsn.get_secret_value()
        if self.password is None:
            return dsn
        password = self.password.get_secret_value()
        if dsn.startswith(("postgresql://", "postgres://")):
            # libpq takes any connection keyword as a URI query parameter.
            joiner = "&" if urlsplit(dsn).query else "?"
            return f"{dsn}{joiner}{urlencode({'password': password})}"
        escaped = password.replace("\\", "\\\\").replace("'", "\\'")
        return f"{dsn} password='{escaped}'"


def connect(config: PostgresConnection) -> Connection:
    """An ADBC connection with autocommit off: everything until `commit` is one
    transaction."""
    # The driver ships no type information: it is typed here by what we call.
    pg: Any = importlib.import_module("adbc_driver_postgresql.dbapi")
    try:
        connection: Connection = pg.connect(config.connection_uri(), autocommit=False)
        return connection
    except Exception as exc:
        raise translate(exc, "connecting to PostgreSQL") from exc


def translate(exc: BaseException, doing: str) -> OrcError:
    """A driver error as transient or permanent, by its SQLSTATE."""
    import adbc_driver_manager

    if isinstance(exc, OrcError):
        return exc
    message = f"{doing} failed: {exc}"
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate in _PERMANENT_STATES:
        return PermanentError(message)
    if sqlstate in _TRANSIENT_STATES or sqlstate[:2] in _TRANSIENT_CLASSES:
        return TransientError(message)
    if sqlstate:
        return PermanentError(message)
    if isinstance(exc, adbc_driver_manager.OperationalError | OSError):
        return TransientError(message)  # no SQLSTATE: the server was not reached
    return PermanentError(message)


def quote_identifier(name: str) -> str:
    if len(name.encode()) > 63:
        raise PermanentError(f"{name!r}: PostgreSQL names are at most 63 bytes")
    return '"' + name.replace('"', '""') + '"'


def sql_literal(value: Any) -> str:
    """A JSON scalar as an SQL literal (an untyped string literal takes the type of what it
    is compared with). Used where a bound parameter would stop result streaming."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise PermanentError(f"cannot compare with {value}")
        return repr(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise PermanentError("a text value with a NUL character")
        return "E'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise PermanentError(f"cannot use {value!r} ({type(value).__name__}) as a cursor value")
