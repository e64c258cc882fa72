"""Extract a Parquet file, a folder of them or a glob (a partitioned dataset)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import Field

from common.errors import PermanentError
from plugins.base import Extractor, PluginConfig
from plugins.filters import RowFilter, to_expression
from plugins.paths import DataPath, ensure_inside, expand_files, is_glob

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError)


class ParquetExtractorConfig(PluginConfig):
    """Which Parquet data to read, which columns and rows of it.

    Example: `{"path": "events/", "columns": ["id", "kind"], "filter": [["year", ">=", 2024]]}`.
    """

    path: DataPath = Field(
        description="A `.parquet` file, a folder (read recursively; names starting with `.` "
        "or `_` are skipped) or a glob (`events/*/*.parquet`), inside the data root."
    )
    columns: list[str] | None = Field(
        default=None, min_length=1, description="The columns to read (default: all)."
    )
    filter: RowFilter = Field(
        default_factory=list,
        description='Rows to keep: conditions that must all hold, each `["column", op, '
        'value]` with op one of == != < <= > >= in not_in, or `["column", "is_null"]`, '
        '`["column", "is_not_null"]`.',
    )
    partitioning: Literal["hive", "none"] = Field(
        default="hive",
        description="`hive`: folders named `key=value` under `path` become columns.",
    )
    batch_rows: int = Field(
        default=64 * 1024, ge=1, le=10_000_000, description="Rows per batch at most."
    )


class ParquetExtractor(Extractor[ParquetExtractorConfig]):
    """Scan the files with `pyarrow.dataset`, one file after the other, batch by batch.

    The schema is the union of every file's (a column missing in a file reads as nulls,
    int widens to float) plus the partition columns. The filter is pushed down to row
    groups. A truncated or foreign file is a `PermanentError` naming it.
    """

    config_model = ParquetExtractorConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        files, base = self._files()
        schemas = [_file_schema(path) for path in files]
        dataset = ds.dataset(
            [str(path) for path in files],
            format="parquet",
            partitioning="hive" if self.config.partitioning == "hive" else None,
            partition_base_dir=str(base) if base is not None else None,
        )
        partition_schema = dataset.partitioning.schema if dataset.partitioning else pa.schema([])
        try:
            schema = pa.unify_schemas([*schemas, partition_schema], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise PermanentError(f"{self.config.path}: the files disagree: {exc}") from exc
        columns = self.config.columns
        missing = [name for name in columns or () if schema.get_field_index(name) < 0]
        if missing:
            raise PermanentError(
                f"{self.config.path}: no column {', '.join(map(repr, missing))}; "
                f"columns: {', '.join(schema.names)}"
            )
        expression = to_expression(self.config.filter, schema)
        rows = 0
        for fragment in dataset.get_fragments(filter=expression):
            try:
                for batch in fragment.to_batches(
                    schema=schema,
                    columns=columns,
                    filter=expression,
                    batch_size=self.config.batch_rows,
                    use_threads=False,
                ):
                    rows += batch.num_rows
                    self.context.report_progress(rows)
                    yield batch
            except _ARROW_ERRORS as exc:
                raise PermanentError(f"{fragment.path}: cannot read: {exc}") from exc

    def _files(self) -> tuple[list[Path], Path | None]:
        """The files to read, and the folder hive partitions are named under."""
        root = self.context.data_root
        path = self.config.path
        if is_glob(path):
            base = Path(*path.parts[: _stem(path)])
            return expand_files(path, root), ensure_inside(base, root)
        path = ensure_inside(path, root)
        if path.is_dir():
            files = sorted(_walk(path, root))
            if not files:
                raise PermanentError(f"{path}: no Parquet file in this folder")
            return files, path
        if not path.exists():
            raise PermanentError(f"{path}: no such file or folder")
        return [path], None


def _stem(pattern: Path) -> int:
    """How many leading parts of `pattern` are plain names (no glob character)."""
    for index, part in enumerate(pattern.parts):
        if is_glob(part):
            return index
    return len(pattern.parts)


def _walk(folder: Path, root: Path) -> Iterator[Path]:
    for current, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for name in names:
            if not name.startswith((".", "_")):
                # A symlink leading out of the data root is refused, not followed.
                yield ensure_inside(Path(current) / name, root)


def _file_schema(path: Path) -> pa.Schema:
    try:
        schema: pa.Schema = pq.read_schema(path)
    except _ARROW_ERRORS as exc:
        raise PermanentError(f"{path}: not a readable Parquet file: {exc}") from exc
    return schema
