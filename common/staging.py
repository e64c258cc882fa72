"""The staging area: where an extract leaves its rows as Parquet for the load to read.

Layout: `<base>/<run_id>/<task_id>/part-00000.parquet`, `part-00001.parquet`, ... The base is
`ORC_STAGING_URL`, a local folder or any URI `pyarrow.fs` opens (`s3://bucket/prefix`), so
extract and load may run on different machines. Batches stream through: memory is bounded
by one batch and one Parquet row group, never by the data.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from common.errors import PermanentError
from common.events import StagedData

ROWS_PER_FILE = 1_000_000


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
    """Parquet part files per (run, task) under one base folder or URI."""

    def __init__(self, url: str, rows_per_file: int = ROWS_PER_FILE) -> None:
        self._rows_per_file = rows_per_file
        if "://" in url:
            self._fs, self._base = pafs.FileSystem.from_uri(url)
            parts = urlsplit(url)
            # Options in the query (`?region=`) configure the filesystem, not a file's name.
            self._base_uri = urlunsplit(
                parts._replace(path=parts.path.rstrip("/"), query="", fragment="")
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
    ) -> StagedData:
        """Stage every batch, replacing what this task staged before (a re-run).

        The file schema is the first batch's; `schema` (or a `RecordBatchReader`'s own)
        only matters when there are no batches: then one empty file keeps the columns.
        """
        if schema is None and isinstance(batches, pa.RecordBatchReader):
            schema = batches.schema
        relative = f"{run_id}/{task_id}"
        folder = f"{self._base}/{relative}"
        self._fs.delete_dir_contents(folder, missing_dir_ok=True)
        self._fs.create_dir(folder, recursive=True)

        first, stream = peek(batches)
        if first is not None:
            schema = first.schema
        if schema is None:
            return StagedData(uri=self._uri(relative), files=(), rows=0)

        files: list[str] = []
        rows = 0
        writer: Any = None
        rows_in_part = 0
        try:
            for batch in stream:
                if not batch.schema.equals(schema):
                    raise PermanentError(
                        f"batch schema changed mid-stream: {batch.schema} after {schema}"
                    )
                if writer is None or rows_in_part >= self._rows_per_file:
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
        return StagedData(
            uri=self._uri(relative),
            files=tuple(files),
            rows=rows,
            columns={field.name: str(field.type) for field in schema},
        )

    def read(self, staged: StagedData) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
        """The staged schema and a stream of its batches, file after file."""
        paths = [self._path(file) for file in staged.files]
        if not paths:
            return pa.schema([]), iter(())
        with self._fs.open_input_file(paths[0]) as f:
            schema = pq.ParquetFile(f).schema_arrow
        return schema, self._iter_batches(paths)

    def remove(self, run_id: uuid.UUID) -> None:
        """Delete everything staged for a run; nothing to delete is fine."""
        folder = f"{self._base}/{run_id}"
        if self._fs.get_file_info(folder).type != pafs.FileType.NotFound:
            self._fs.delete_dir(folder)

    def _open_part(self, folder: str, index: int, schema: pa.Schema) -> Any:
        # Given a path and the filesystem, the writer owns (and closes) the stream it opens.
        return pq.ParquetWriter(f"{folder}/{_part_name(index)}", schema, filesystem=self._fs)

    def _iter_batches(self, paths: list[str]) -> Iterator[pa.RecordBatch]:
        for path in paths:
            with self._fs.open_input_file(path) as f:
                yield from pq.ParquetFile(f).iter_batches()

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


def _part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"
