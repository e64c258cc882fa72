"""Load record batches into a DuckDB table, idempotently per run."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, Self

import duckdb
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from common.errors import PermanentError, TransientError
from plugins.base import Loader, PluginConfig
from plugins.loading import (
    RUN_ID_COLUMN,
    TABLE_NAME,
    CountedSource,
    SchemaPolicy,
    check_key_columns,
    check_new_columns,
    coalesced,
    reject_engine_columns,
)
from plugins.paths import DataPath, ensure_inside

INGEST_BATCH_ROWS = 250_000
"""Rows per batch handed to DuckDB (see `_insert`)."""

_file_locks: dict[Path, threading.Lock] = {}
_file_locks_guard = threading.Lock()


class DuckDBConfig(PluginConfig):
    """Which DuckDB file and table to load into, and how."""

    database: DataPath = Field(
        description="The `.duckdb` file inside the data root; it and its folder are created "
        "if missing."
    )
    table: str = Field(
        pattern=TABLE_NAME,
        max_length=255,
        description="`table` or `schema.table`: letters, digits and underscores.",
    )
    mode: Literal["append", "replace", "merge"] = Field(
        default="append",
        description="`append` adds this run's rows (replacing an earlier try of the same "
        "run); `replace` makes the table hold this run's rows only; `merge` upserts on "
        "`key_columns`: a row whose key is already in the table replaces it.",
    )
    key_columns: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The columns that identify a row, for `merge` (the last row of a run "
        "wins when a key repeats; a null key is an error).",
    )
    schema_policy: SchemaPolicy = Field(
        default="evolve",
        description="What a column new in the source does to an existing table: `evolve` "
        "adds it; `strict` fails the task naming it. (`replace` recreates the table.)",
    )
    memory_limit: str = Field(
        default="128MB",
        pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|KiB|MiB|GiB)$",
        description="DuckDB's buffer memory for the load (it spills to disk beyond): keeps "
        "a worker's memory bounded however large the data. More speeds up big merges.",
    )

    @field_validator("database")
    @classmethod
    def _is_a_database_file(cls, value: Path) -> Path:
        if value.suffix not in {".duckdb", ".db"}:
            raise ValueError("the database file name must end in .duckdb or .db")
        return value

    @model_validator(mode="after")
    def _merge_needs_keys(self) -> Self:
        if self.mode == "merge" and not self.key_columns:
            raise ValueError("mode merge needs key_columns")
        return self


class DuckDBLoader(Loader[DuckDBConfig]):
    """Write every batch in one DuckDB transaction, keyed by run.

    `append` deletes the rows an earlier attempt of the same run wrote, then inserts;
    `replace` recreates the table, then inserts; `merge` does as `append`, then keeps one
    row per key: this run's last; so a redelivered load leaves the table as if it ran once.
    The table is created from the Arrow schema when missing, plus the engine column
    `_orc_run_id`; columns new in the batches are added to an existing table (`evolve`) or
    fail the task (`strict`).
    DuckDB lets one process at a time write a file: a lock held elsewhere is a
    `TransientError`, and loads into one file within this process take turns.
    """

    config_model = DuckDBConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        path = ensure_inside(self.config.database, self.context.data_root)
        reject_engine_columns(schema)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermanentError(f"cannot create the folder of {path}: {exc}") from exc
        keys = (self.config.key_columns or []) if self.config.mode == "merge" else []
        check_key_columns(schema, keys)
        source = CountedSource(batches, keys, self.context.report_progress)
        with _file_lock(path):
            try:
                con = duckdb.connect(str(path))
            except duckdb.Error as exc:
                raise _translate(exc, path) from exc
            try:
                # Without a limit DuckDB keeps what it wrote cached: memory would grow with
                # the data. The value is checked by the config's pattern.
                con.execute(f"SET memory_limit = '{self.config.memory_limit}'")
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

    def _load(
        self, con: duckdb.DuckDBPyConnection, schema: pa.Schema, source: CountedSource
    ) -> None:
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
                new = [(name, type_) for name, type_ in all_columns if name.lower() not in existing]
                check_new_columns(
                    self.config.schema_policy, f"table {self.config.table}", [n for n, _ in new]
                )
                for name, type_ in new:
                    con.execute(f"ALTER TABLE {table} ADD COLUMN {_quote(name)} {type_}")
                # What an earlier attempt of this run wrote goes, so the load counts once.
                con.execute(
                    f"DELETE FROM {table} WHERE {RUN_ID_COLUMN} = ?", [str(self.context.run_id)]
                )
            else:
                con.execute(f"CREATE TABLE {table} ({ddl})")
            if columns:
                self._insert(con, table, schema, source)
            if self.config.mode == "merge" and self.config.key_columns:
                self._keep_last_per_key(con, table, self.config.key_columns)
            con.commit()
        except BaseException:
            # Keep the error that made us roll back, not one from the rollback itself.
            with contextlib.suppress(duckdb.Error):
                con.rollback()
            raise

    def _insert(
        self, con: duckdb.DuckDBPyConnection, table: str, schema: pa.Schema, source: CountedSource
    ) -> None:
        view = f"_orc_source_{uuid.uuid4().hex}"
        # A RecordBatchReader is scanned as a stream, a batch in memory at a time; DuckDB
        # ingests a few large batches faster than many small ones (1M rows: 0.27 s in
        # batches of 250k, 0.4 s in the CSV extractor's of about 60k).
        stream = source.guard(coalesced(source, INGEST_BATCH_ROWS))
        con.register(view, pa.RecordBatchReader.from_batches(schema, stream))
        try:
            names = ", ".join(_quote(name) for name in schema.names)
            con.execute(
                f"INSERT INTO {table} ({names}, {RUN_ID_COLUMN}) SELECT {names}, ? FROM {view}",
                [str(self.context.run_id)],
            )
        finally:
            con.unregister(view)

    def _keep_last_per_key(
        self, con: duckdb.DuckDBPyConnection, table: str, keys: list[str]
    ) -> None:
        """After this run's rows are in: older rows with the same key go, and of this run's
        rows sharing a key only the last inserted stays."""
        run = str(self.context.run_id)
        key_list = ", ".join(_quote(key) for key in keys)
        con.execute(
            f"DELETE FROM {table} WHERE {RUN_ID_COLUMN} = ? AND rowid NOT IN "
            f"(SELECT max(rowid) FROM {table} WHERE {RUN_ID_COLUMN} = ? GROUP BY {key_list})",
            [run, run],
        )
        match = " AND ".join(f"{table}.{_quote(key)} = _orc_new.{_quote(key)}" for key in keys)
        con.execute(
            f"DELETE FROM {table} USING (SELECT DISTINCT {key_list} FROM {table} "
            f"WHERE {RUN_ID_COLUMN} = ?) AS _orc_new "
            f"WHERE {match} AND {table}.{RUN_ID_COLUMN} IS DISTINCT FROM ?",
            [run, run],
        )


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
