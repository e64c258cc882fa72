"""What the built-in loaders share: the engine's run column, schema policy, merge keys."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

import pyarrow as pa

from common.errors import PermanentError

RUN_ID_COLUMN = "_orc_run_id"
"""The engine's column: which run wrote a row, so a redelivered load can undo its first try."""

IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
TABLE_NAME = rf"^{IDENTIFIER}(\.{IDENTIFIER})?$"
"""`table` or `schema.table`: safe to quote as identifiers."""

SchemaPolicy = Literal["evolve", "strict"]


def reject_engine_columns(schema: pa.Schema) -> None:
    reserved = [name for name in schema.names if name.lower().startswith("_orc_")]
    if reserved:
        raise PermanentError(
            f"columns named _orc_* are reserved for the engine: {', '.join(reserved)}"
        )


def check_new_columns(policy: SchemaPolicy, table: str, new: Sequence[str]) -> None:
    """Under `strict`, columns the destination lacks fail the task, naming them."""
    if new and policy == "strict":
        raise PermanentError(
            f"{table} has no column {', '.join(map(repr, new))} and schema_policy is strict: "
            "add the column(s) to the destination, or use schema_policy evolve"
        )


def check_key_columns(schema: pa.Schema, keys: Sequence[str]) -> None:
    absent = [key for key in keys if key not in schema.names]
    if absent:
        raise PermanentError(
            f"merge key column(s) {', '.join(map(repr, absent))} not among the source "
            f"columns: {', '.join(schema.names)}"
        )


def _check_not_null(batch: pa.RecordBatch, keys: Sequence[str], rows_before: int) -> None:
    for name in keys:
        nulls = batch.column(name).null_count
        if nulls:
            raise PermanentError(
                f"merge key column {name!r} is null in {nulls} row(s) of the batch after row "
                f"{rows_before}: every row needs a key"
            )


class CountedSource:
    """The batches, counted (and reported as progress), merge keys checked for nulls; an
    exception they raise is kept, so a loader can re-raise it as itself when a driver wraps
    it (the worker's interruption of a timed-out task included)."""

    def __init__(
        self,
        batches: Iterable[pa.RecordBatch],
        not_null: Iterable[str] = (),
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self._batches = batches
        self._not_null = tuple(not_null)
        self._progress = progress
        self.rows = 0
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self._batches:
                _check_not_null(batch, self._not_null, self.rows)
                if self._progress is not None and self.rows:
                    self._progress(self.rows)
                self.rows += batch.num_rows
                yield batch
        except Exception as exc:
            self.error = exc
            raise

    def guard(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """`batches` (derived from this source), keeping the error they raise too."""
        try:
            yield from batches
        except Exception as exc:
            self.error = self.error or exc
            raise


def coalesced(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The same rows in batches of at least `rows` (the last may be smaller): for drivers
    that ingest a few large batches faster than many small ones. One batch's worth is held."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if not pending and batch.num_rows >= rows:
            yield batch
            continue
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.concat_batches(pending)
            pending, count = [], 0
    if pending:
        yield pa.concat_batches(pending)
