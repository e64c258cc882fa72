"""Extract the result of a PostgreSQL query, streamed, incrementally if asked."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator

from common.errors import PermanentError
from plugins.base import Extractor
from plugins.postgres_common import (
    PostgresConnection,
    connect,
    quote_identifier,
    sql_literal,
    translate,
)

MIB = 1024 * 1024


class PostgresExtractorConfig(PostgresConnection):
    """A query to run, read-only.

    Example: `{"dsn_env": "SHOP_DSN", "query": "SELECT * FROM orders",
    "cursor_column": "updated_at"}`.
    """

    query: str = Field(min_length=1, description="One SELECT (or WITH ... SELECT) statement.")
    cursor_column: str | None = Field(
        default=None,
        description="Incremental extraction: a column of the result that grows (an id, an "
        "`updated_at`). Each run reads only rows above the last completed run's maximum.",
    )
    initial_cursor: str | int | float | None = Field(
        default=None, description="The lower bound for the first run (default: none)."
    )
    batch_size_bytes: int = Field(
        default=8 * MIB, ge=64 * 1024, le=512 * MIB, description="About this much per batch."
    )

    @field_validator("query")
    @classmethod
    def _one_statement(cls, value: str) -> str:
        return value.strip().rstrip(";").strip()


class PostgresExtractor(Extractor[PostgresExtractorConfig]):
    """Stream the query's rows as Arrow batches through ADBC (binary `COPY ... TO STDOUT`).

    The result streams from the server as it is read: memory holds about one batch, never
    the whole result. The transaction is read-only, so a query cannot change data. With
    `cursor_column` the query runs as `SELECT * FROM (<query>) WHERE <cursor> > <last>`,
    and the maximum seen is kept for the next run once this one completes. Columns of
    types Arrow has no match for (`numeric` without precision, `jsonb`, ...) come as text.
    """

    config_model = PostgresExtractorConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        config = self.config
        key = f"cursor:{config.cursor_column}" if config.cursor_column else None
        query = config.query
        if config.cursor_column is not None and key is not None:
            since = self.context.state.get(key, config.initial_cursor)
            if since is not None:
                # A literal, not a bound parameter: with parameters the driver cannot stream.
                query = (
                    f"SELECT * FROM ({query}) AS _orc_source "
                    f"WHERE {quote_identifier(config.cursor_column)} > {sql_literal(since)}"
                )
        conn = connect(config)
        try:
            cursor = conn.cursor()
            try:
                cursor.execute("SET TRANSACTION READ ONLY")
                cursor.adbc_statement.set_options(
                    **{"adbc.postgresql.batch_size_hint_bytes": str(config.batch_size_bytes)}
                )
                cursor.execute(query)
                reader = cursor.fetch_record_batch()
            except Exception as exc:
                raise translate(exc, "running the query") from exc
            yield from self._stream(reader)
        finally:
            conn.close()

    def _stream(self, reader: Any) -> Iterator[pa.RecordBatch]:
        column = self.config.cursor_column
        schema = _plain_schema(reader.schema)
        if column is not None and schema.get_field_index(column) < 0:
            raise PermanentError(
                f"cursor_column {column!r} is not a column of the result: {', '.join(schema.names)}"
            )
        newest: Any = None
        rows = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            except Exception as exc:
                raise translate(exc, "reading the result") from exc
            batch = _plain(batch, schema)
            if column is not None and batch.num_rows:
                top = pc.max(batch.column(column)).as_py()
                if top is not None and (newest is None or top > newest):
                    newest = top
            rows += batch.num_rows
            self.context.report_progress(rows)
            yield batch
        if column is not None and newest is not None:
            self.context.update_state(f"cursor:{column}", _json_value(newest, column))


def _plain_type(type_: pa.DataType) -> pa.DataType:
    # The driver marks types it has no Arrow match for as opaque extensions over text.
    return type_.storage_type if isinstance(type_, pa.BaseExtensionType) else type_


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, _plain_type(f.type), f.nullable) for f in schema])


def _plain(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    columns = [
        column.storage if isinstance(column.type, pa.BaseExtensionType) else column
        for column in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _json_value(value: Any, column: str) -> Any:
    """The cursor's maximum as JSON for the job state (a timestamp as ISO text)."""
    if isinstance(value, bool) or value is None:
        raise PermanentError(f"cursor_column {column!r} is not a growing value: {value!r}")
    if isinstance(value, int | float | str):
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise PermanentError(
        f"cursor_column {column!r} has values of type {type(value).__name__}; use a number, "
        "text, date or timestamp column"
    )
