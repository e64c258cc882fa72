"""The staging area: where an extract leaves its rows for the load to read.

Rows are staged as Arrow IPC files with LZ4-compressed buffers: they are written and read
once, soon, by this engine, so Parquet's encoding would be work for nothing (for a million
rows of five columns: 0.05 s to write and read, against 0.25 s as LZ4 Parquet, at about the
same size). Parts written as Parquet by an earlier version are still read.

Layout: `<base>/<run_id>/<task_id>/part-00000.arrow`, `part-00001.arrow`, ... The base is
`ORC_STAGING_URL`, a local folder or any URI `pyarrow.fs` opens, so extract and load may run
on different machines: `s3://bucket/prefix?region=eu-west-1`, or for an S3-compatible store
`s3://bucket/prefix?endpoint_override=host:9000&scheme=http` (credentials from the usual
`AWS_*` variables). Batches stream through: memory is bounded by a few batches, never by
the data.

A source whose batches change schema midway (a new column in the third CSV of a glob, an
HTTP page where a field first appears) starts a new part file; reading unifies the parts'
schemas (a missing column reads as nulls, int64 widens to double, null to any type).
"""

from __future__ import annotations

import base64
import itertools
import threading
import uuid
from collections.abc import Container, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.ipc
import pyarrow.parquet as pq

from common.errors import PermanentError
from common.events import StagedData

ROWS_PER_FILE = 1_000_000
REMEMBERED_INLINE_RESULTS = 256


def peek(
    batches: Iterable[pa.RecordBatch],
) -> tuple[pa.RecordBatch | None, Iterator[pa.RecordBatch]]:
    """The first batch (None if there is none) and an iterator that still yields all of them."""
    it = iter(batches)
    first = next(it, None)
    if first is None:
        return None, it
    return first, itertools.chain([first], it)


class StagingArea:
    """Arrow IPC part files per (run, task) under one base folder or URI."""

    def __init__(self, url: str, rows_per_file: int = ROWS_PER_FILE, inline_bytes: int = 0) -> None:
        self._rows_per_file = rows_per_file
        self._inline_bytes = inline_bytes
        self._recent: dict[str, pa.Table] = {}
        """Small results this process just staged inline, by their encoding: a load run
        right after its extract (`TaskDispatched.then`) reads the table, not the text."""
        self._recent_lock = threading.Lock()
        if "://" in url:
            self._fs, self._base = pafs.FileSystem.from_uri(url)
            parts = urlsplit(url)
            # Options in the query (`?region=`) configure the filesystem, not a file's name;
            # credentials in the URI stay out of the URIs that events carry.
            netloc = parts.netloc.rpartition("@")[2]
            self._base_uri = urlunsplit(
                parts._replace(netloc=netloc, path=parts.path.rstrip("/"), query="", fragment="")
            )
        else:
            local = Path(url).expanduser().resolve()
            self._fs, self._base = pafs.LocalFileSystem(), local.as_posix()
            self._base_uri = local.as_uri()
        self._base = self._base.rstrip("/")

    def write(
        self,
        run_id: uuid.UUID,
        task_id: uuid.UUID,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema | None = None,
        execution: str | None = None,
    ) -> StagedData:
        """Stage every batch, replacing what this execution staged before.

        Each execution of a task (`execution`, e.g. the dispatch's event id plus a random
        part) gets a folder of its own: two executions of one attempt running at once (a
        redelivery while the first still runs) never truncate each other's files, and
        the loader reads exactly the files the winning outcome names. Old executions are
        removed with the run by the retention sweep.

        The file schema is the first batch's; `schema` (or a `RecordBatchReader`'s own)
        only matters when there are no batches: then one empty file keeps the columns.
        """
        if schema is None and isinstance(batches, pa.RecordBatchReader):
            schema = batches.schema
        relative = f"{run_id}/{task_id}" + (f"/{execution}" if execution else "")
        stream: Iterator[pa.RecordBatch] = iter(batches)
        if self._inline_bytes:
            small, stream = self._small_result(stream)
            if small is not None:
                staged = _inline(self._uri(relative), small)
                self._remember(staged, small)
                return staged
        folder = f"{self._base}/{relative}"
        self._fs.delete_dir_contents(folder, missing_dir_ok=True)
        self._fs.create_dir(folder, recursive=True)

        first, stream = peek(stream)
        if first is not None:
            schema = first.schema
        if schema is None:
            return StagedData(uri=self._uri(relative), files=(), rows=0)

        files: list[str] = []
        schemas = [schema]
        rows = 0
        writer: Any = None
        rows_in_part = 0
        try:
            for batch in stream:
                changed = not batch.schema.equals(schema)
                if changed:
                    schema = batch.schema
                    schemas.append(schema)
                if writer is None or changed or rows_in_part >= self._rows_per_file:
                    if writer is not None:
                        writer.close()
                    writer = self._open_part(folder, len(files), schema)
                    files.append(self._uri(f"{relative}/{_part_name(len(files))}"))
                    rows_in_part = 0
                writer.write_batch(batch)
                rows_in_part += batch.num_rows
                rows += batch.num_rows
            if writer is None:
                writer = self._open_part(folder, 0, schema)
                files.append(self._uri(f"{relative}/{_part_name(0)}"))
        finally:
            if writer is not None:
                writer.close()
        unified = _unify(schemas, self._uri(relative))
        return StagedData(
            uri=self._uri(relative),
            files=tuple(files),
            rows=rows,
            columns={field.name: str(field.type) for field in unified},
        )

    def _remember(self, staged: StagedData, table: pa.Table) -> None:
        assert staged.inline is not None
        with self._recent_lock:
            self._recent[staged.inline] = table
            while len(self._recent) > REMEMBERED_INLINE_RESULTS:
                del self._recent[next(iter(self._recent))]

    def _small_result(
        self, stream: Iterator[pa.RecordBatch]
    ) -> tuple[pa.Table | None, Iterator[pa.RecordBatch]]:
        """The whole result as a table if it is small enough to go inline (one schema, at
        most `inline_bytes`), else None and a stream that still yields every batch."""
        taken: list[pa.RecordBatch] = []
        size = 0
        for batch in stream:
            taken.append(batch)
            size += batch.nbytes
            if size > self._inline_bytes or not batch.schema.equals(taken[0].schema):
                return None, itertools.chain(taken, stream)
        if not taken:
            return None, iter(())
        return pa.Table.from_batches(taken), iter(())

    def read(self, staged: StagedData) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The staged schema and a stream of its batches, file after file, each batch in
        that schema (the parts' schemas unified when they differ)."""
        if staged.inline is not None:
            with self._recent_lock:
                table = self._recent.pop(staged.inline, None)
            if table is None:
                table = _from_inline(staged.inline)
            return table.schema, iter(table.to_batches())
        paths = [self._path(file) for file in staged.files]
        if not paths:
            return pa.schema([]), iter(())
        schemas = [self._file_schema(path) for path in paths]
        schema = _unify(schemas, staged.uri)
        return schema, self._iter_batches(paths, schema)

    def remove(self, run_id: uuid.UUID) -> None:
        """Delete everything staged for a run; nothing to delete is fine."""
        folder = f"{self._base}/{run_id}"
        if self._fs.get_file_info(folder).type != pafs.FileType.NotFound:
            self._fs.delete_dir(folder)

    def remove_older_than(
        self,
        age: timedelta,
        keep: Container[uuid.UUID] = (),
        now: datetime | None = None,
    ) -> list[uuid.UUID]:
        """Delete the staged files of every run whose newest file is older than `age`,
        except the runs in `keep` (those still running); return the runs removed.

        Only run folders (named by a UUID) are considered: anything else under the base is
        not ours to delete. Meant to be called periodically (`ORC_STAGING_RETENTION_HOURS`).
        """
        cutoff = (now or datetime.now(UTC)) - age
        removed: list[uuid.UUID] = []
        for entry in self._fs.get_file_info(pafs.FileSelector(self._base, allow_not_found=True)):
            run_id = _as_uuid(entry.base_name)
            if run_id is None or run_id in keep or entry.type != pafs.FileType.Directory:
                continue
            newest = self._newest_mtime(entry.path)
            if newest is None or newest < cutoff:
                self._fs.delete_dir(entry.path)
                removed.append(run_id)
        return removed

    def _newest_mtime(self, folder: str) -> datetime | None:
        """The newest file's modification time (object stores keep none for folders)."""
        times = [
            info.mtime
            for info in self._fs.get_file_info(pafs.FileSelector(folder, recursive=True))
            if info.type == pafs.FileType.File and info.mtime is not None
        ]
        if not times:
            return None
        newest: datetime = max(times)
        return newest if newest.tzinfo else newest.replace(tzinfo=UTC)

    def _file_schema(self, path: str) -> pa.Schema:
        try:
            with self._fs.open_input_file(path) as f:
                schema: pa.Schema = (
                    pq.ParquetFile(f).schema_arrow
                    if path.endswith(_PARQUET)
                    else pa.ipc.open_file(f).schema
                )
                return schema
        except FileNotFoundError as exc:
            raise PermanentError(f"staged file {path} is gone (cleaned up?)") from exc
        except (pa.ArrowInvalid, OSError) as exc:
            raise PermanentError(f"staged file {path} is not readable: {exc}") from exc

    def _open_part(self, folder: str, index: int, schema: pa.Schema) -> _Part:
        return _Part(self._fs.open_output_stream(f"{folder}/{_part_name(index)}"), schema)

    def _iter_batches(self, paths: list[str], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        for path in paths:
            with self._fs.open_input_file(path) as f:
                for batch in _file_batches(f, path):
                    yield batch if batch.schema.equals(schema) else _conform(batch, schema)

    def _uri(self, relative: str) -> str:
        return f"{self._base_uri}/{relative}"

    def _path(self, uri: str) -> str:
        # Only files of this staging area are read: an event cannot point a loader elsewhere.
        prefix = f"{self._base_uri}/"
        if not uri.startswith(prefix):
            raise PermanentError(f"{uri} is not in the staging area {self._base_uri}")
        relative = uri.removeprefix(prefix)
        if ".." in relative.split("/"):
            raise PermanentError(f"{uri} escapes the staging area {self._base_uri}")
        return f"{self._base}/{relative}"


def _inline(uri: str, table: pa.Table) -> StagedData:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return StagedData(
        uri=uri,
        files=(),
        rows=table.num_rows,
        columns={field.name: str(field.type) for field in table.schema},
        inline=base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii"),
    )


def _from_inline(data: str) -> pa.Table:
    try:
        return pa.ipc.open_stream(base64.b64decode(data, validate=True)).read_all()
    except (ValueError, pa.ArrowInvalid) as exc:
        raise PermanentError(f"inline staged data is not an Arrow IPC stream: {exc}") from exc


_PARQUET = ".parquet"


class _Part:
    """One part file being written: an IPC file writer over a stream it closes too."""

    def __init__(self, sink: Any, schema: pa.Schema) -> None:
        self._sink = sink
        try:
            options = pa.ipc.IpcWriteOptions(compression="lz4")
            self._writer = pa.ipc.new_file(sink, schema, options=options)
        except BaseException:
            sink.close()
            raise

    def write_batch(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        try:
            self._writer.close()
        finally:
            self._sink.close()


def _file_batches(f: Any, path: str) -> Iterator[pa.RecordBatch]:
    if path.endswith(_PARQUET):
        yield from pq.ParquetFile(f).iter_batches()
        return
    reader = pa.ipc.open_file(f)
    for index in range(reader.num_record_batches):
        yield reader.get_batch(index)


def _part_name(index: int) -> str:
    return f"part-{index:05d}.arrow"


def _as_uuid(name: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(name)
    except ValueError:
        return None


def _unify(schemas: list[pa.Schema], where: str) -> pa.Schema:
    if all(schema.equals(schemas[0]) for schema in schemas[1:]):
        return schemas[0]
    try:
        unified: pa.Schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise PermanentError(f"the batches staged at {where} disagree on a column: {exc}") from exc
    return unified


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` in `schema`'s column order and types; columns it lacks are nulls."""
    columns = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            columns.append(pa.nulls(batch.num_rows, field.type))
        else:
            columns.append(batch.column(index).cast(field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)
