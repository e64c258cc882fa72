"""Load record batches into a DuckDB table, idempotently per run."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa
from pydantic import Field, field_validator

from common.errors import PermanentError, TransientError
from plugins.base import Loader, PluginConfig
from plugins.paths import DataPath, ensure_inside

RUN_ID_COLUMN = "_orc_run_id"
"""The engine's column: which run wrote a row, so a redelivered load can undo its first try."""

_IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"

_file_locks: dict[Path, threading.Lock] = {}
_file_locks_guard = threading.Lock()


class DuckDBConfig(PluginConfig):
    """Which DuckDB file and table to load into, and how."""

    database: DataPath = Field(
        description="The `.duckdb` file inside the data root; it and its folder are created "
        "if missing."
    )
    table: str = Field(
        pattern=rf"^{_IDENTIFIER}(\.{_IDENTIFIER})?$",
        max_length=255,
        description="`table` or `schema.table`: letters, digits and underscores.",
    )
    mode: Literal["append", "replace"] = Field(
        default="append",
        description="`append` adds this run's rows (replacing an earlier try of the same "
        "run); `replace` makes the table hold this run's rows only.",
    )

    @field_validator("database")
    @classmethod
    def _is_a_database_file(cls, value: Path) -> Path:
        if value.suffix not in {".duckdb", ".db"}:
            raise ValueError("the database file name must end in .duckdb or .db")
        return value


class DuckDBLoader(Loader[DuckDBConfig]):
    """Write every batch in one DuckDB transaction, keyed by run.

    `append` deletes the rows an earlier attempt of the same run wrote, then inserts;
    `replace` recreates the table, then inserts; so a redelivered load leaves the table as
    if it ran once. The table is created from the Arrow schema when missing, plus the
    engine column `_orc_run_id`; columns new in the batches are added to an existing table.
    DuckDB lets one process at a time write a file: a lock held elsewhere is a
    `TransientError`, and loads into one file within this process take turns.
    """

    config_model = DuckDBConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        path = ensure_inside(self.config.database, self.context.data_root)
        if any(name.lower().startswith("_orc_") for name in schema.names):
            raise PermanentError(f"columns named _orc_* are reserved for the engine: {schema}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentError(f"cannot create the folder of {path}: {exc}") from exc
        source = _Source(batches)
        with _file_lock(path):
            try:
                con = duckdb.connect(str(path))
            except duckdb.Error as exc:
                raise _translate(exc, path) from exc
            try:
                self._load(con, schema, source)
            except duckdb.Error as exc:
                # A failure inside our own batch iterator surfaces as a DuckDB error: the
                # original (perhaps transient) one says more.
                if source.error is not None:
                    raise source.error from exc
                raise _translate(exc, path) from exc
            finally:
                con.close()
        return source.rows

    def _load(self, con: duckdb.DuckDBPyConnection, schema: pa.Schema, source: _Source) -> None:
        schema_name, _, table_name = self.config.table.rpartition(".")
        schema_name = schema_name or "main"
        table = f"{_quote(schema_name)}.{_quote(table_name)}"
        columns = _duckdb_columns(con, schema)
        all_columns = [*columns, (RUN_ID_COLUMN, "VARCHAR")]
        ddl = ", ".join(f"{_quote(name)} {type_}" for name, type_ in all_columns)
        con.begin()
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(schema_name)}")
            if self.config.mode == "replace":
                con.execute(f"CREATE OR REPLACE TABLE {table} ({ddl})")
            elif existing := _existing_columns(con, schema_name, table_name):
                for name, type_ in all_columns:
                    if name.lower() not in existing:
                        con.execute(f"ALTER TABLE {table} ADD COLUMN {_quote(name)} {type_}")
                # What an earlier attempt of this run wrote goes, so the load counts once.
                con.execute(
                    f"DELETE FROM {table} WHERE {RUN_ID_COLUMN} = ?", [str(self.context.run_id)]
                )
            else:
                con.execute(f"CREATE TABLE {table} ({ddl})")
            if columns:
                self._insert(con, table, schema, source)
            con.commit()
        except BaseException:
            # Keep the error that made us roll back, not one from the rollback itself.
            with contextlib.suppress(duckdb.Error):
                con.rollback()
            raise

    def _insert(
        self, con: duckdb.DuckDBPyConnection, table: str, schema: pa.Schema, source: _Source
    ) -> None:
        view = f"_orc_source_{uuid.uuid4().hex}"
        # A RecordBatchReader is scanned as a stream: one batch in memory at a time.
        con.register(view, pa.RecordBatchReader.from_batches(schema, source))
        try:
            names = ", ".join(_quote(name) for name in schema.names)
            con.execute(
                f"INSERT INTO {table} ({names}, {RUN_ID_COLUMN}) SELECT {names}, ? FROM {view}",
                [str(self.context.run_id)],
            )
        finally:
            con.unregister(view)


class _Source:
    """The batches, counted; an exception they raise is kept to re-raise as itself."""

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        self._batches = batches
        self.rows = 0
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._batches:
                self.rows += batch.num_rows
                yield batch
        except Exception as exc:
            self.error = exc
            raise


def _file_lock(path: Path) -> threading.Lock:
    with _file_locks_guard:
        return _file_locks.setdefault(path, threading.Lock())


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _duckdb_columns(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> list[tuple[str, str]]:
    """Each Arrow field's name and DuckDB type, as DuckDB itself maps them."""
    relation = con.from_arrow(schema.empty_table())
    return [
        # An all-empty column comes as Arrow's null type; DuckDB's NULL type holds nothing
        # later, so such a column is made text.
        (field.name, "VARCHAR" if pa.types.is_null(field.type) else str(type_))
        for field, type_ in zip(schema, relation.types, strict=True)
    ]


def _existing_columns(
    con: duckdb.DuckDBPyConnection, schema_name: str, table_name: str
) -> set[str]:
    """The table's column names, lower-cased (DuckDB matches identifiers without case)."""
    rows = con.execute(
        "SELECT lower(column_name) FROM information_schema.columns "
        "WHERE table_catalog = current_database() "
        "AND lower(table_schema) = lower(?) AND lower(table_name) = lower(?)",
        [schema_name, table_name],
    ).fetchall()
    return {row[0] for row in rows}


def _translate(exc: duckdb.Error, path: Path) -> PermanentError | TransientError:
    if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():
        return TransientError(f"{path} is locked by another process: {exc}")
    return PermanentError(f"loading into {path} failed: {exc}")
