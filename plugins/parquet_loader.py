"""Load record batches into a Parquet file or a partitioned Parquet dataset, per run."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Self

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from common.errors import PermanentError
from plugins.base import Loader, PluginConfig
from plugins.loading import CountedSource, SchemaPolicy, check_new_columns
from plugins.paths import DataPath, ensure_inside

_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)


class ParquetLoaderConfig(PluginConfig):
    """Where to write Parquet, and how.

    Examples: `{"path": "out/cities.parquet"}` (one file, rewritten each run);
    `{"path": "out/events", "partition_by": ["country"]}` (a dataset, each run adds files).
    """

    path: DataPath = Field(
        description="A file ending in `.parquet`, or a folder for a dataset, inside the "
        "data root; made when missing."
    )
    mode: Literal["append", "replace"] | None = Field(
        default=None,
        description="`append` adds this run's files to the dataset; `replace` makes it hold "
        "this run's only. Default: `replace` for a file (which cannot be appended to), "
        "`append` for a folder.",
    )
    partition_by: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Columns whose values name the dataset's folders (`country=DE/`).",
    )
    schema_policy: SchemaPolicy = Field(
        default="evolve",
        description="`append`: a column the dataset's files lack is written (`evolve`) or "
        "fails the task naming it (`strict`).",
    )
    compression: Literal["snappy", "zstd", "gzip", "none"] = Field(
        default="zstd", description="Parquet compression codec."
    )
    max_rows_per_file: int = Field(
        default=1_000_000, ge=1, description="Rows per file of a dataset at most."
    )

    @property
    def is_file(self) -> bool:
        return self.path.suffix.lower() == ".parquet"

    @property
    def effective_mode(self) -> Literal["append", "replace"]:
        return self.mode or ("replace" if self.is_file else "append")

    @model_validator(mode="after")
    def _file_or_dataset(self) -> Self:
        if self.is_file and self.mode == "append":
            raise ValueError("a single Parquet file cannot be appended to: use a folder path")
        if self.is_file and self.partition_by:
            raise ValueError("partition_by needs a folder path, not a .parquet file")
        return self


class ParquetLoader(Loader[ParquetLoaderConfig]):
    """Write into a hidden temporary place, then move the result in, per run.

    A file is written beside itself and renamed over the old one. A dataset run writes
    `<run_id>-<n>.parquet` files (partition folders under them) into a hidden folder, then
    removes any files an earlier attempt of the same run left, and moves its own in; a
    `replace` swaps the whole folder. So the same load twice leaves what one leaves.
    Readers that skip names starting with `.` (pyarrow, DuckDB, Spark) never see a half
    written file.
    """

    config_model = ParquetLoaderConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        path = ensure_inside(self.config.path, self.context.data_root)
        for name in self.config.partition_by or ():
            if name not in schema.names:
                raise PermanentError(
                    f"partition column {name!r} not among the columns: {', '.join(schema.names)}"
                )
        source = CountedSource(batches, progress=self.context.report_progress)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if self.config.is_file:
                self._write_file(path, schema, source)
            elif self.config.effective_mode == "replace":
                self._replace_dataset(path, schema, source)
            else:
                self._append_dataset(path, schema, source)
        except _ARROW_ERRORS as exc:
            if source.error is not None:
                raise source.error from exc
            raise PermanentError(f"writing {path} failed: {exc}") from exc
        except OSError as exc:
            if source.error is not None:
                raise source.error from exc
            raise PermanentError(f"writing {path} failed: {exc}") from exc
        return source.rows

    def _write_file(self, path: Path, schema: pa.Schema, source: CountedSource) -> None:
        temporary = path.with_name(f".{path.name}.orc-{self.context.run_id}.tmp")
        try:
            with pq.ParquetWriter(temporary, schema, compression=self._codec()) as writer:
                for batch in source:
                    writer.write_batch(batch)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def _append_dataset(self, path: Path, schema: pa.Schema, source: CountedSource) -> None:
        run = str(self.context.run_id)
        if self.config.schema_policy == "strict" and path.is_dir():
            # Reads every file's footer: only strict needs to know the columns.
            existing = _dataset_columns(path)
            if existing is not None:
                new = [name for name in schema.names if name not in existing]
                check_new_columns(self.config.schema_policy, f"dataset {path}", new)
        temporary = path / f".orc-tmp-{run}"
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            self._write_dataset(temporary, schema, source)
            # What an earlier attempt of this run moved in goes, then this attempt's comes.
            for old in _run_files(path, run):
                old.unlink()
            for new_file in sorted(temporary.rglob("*.parquet")):
                target = path / new_file.relative_to(temporary)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(new_file, target)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)

    def _replace_dataset(self, path: Path, schema: pa.Schema, source: CountedSource) -> None:
        run = self.context.run_id
        fresh = path.with_name(f".{path.name}.orc-new-{run}")
        stale = path.with_name(f".{path.name}.orc-old-{run}")
        shutil.rmtree(fresh, ignore_errors=True)
        try:
            self._write_dataset(fresh, schema, source)
            fresh.mkdir(exist_ok=True)  # no rows: the dataset becomes an empty folder
            if path.exists():
                shutil.rmtree(stale, ignore_errors=True)
                os.rename(path, stale)
            os.rename(fresh, path)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
            shutil.rmtree(stale, ignore_errors=True)

    def _write_dataset(self, folder: Path, schema: pa.Schema, source: CountedSource) -> None:
        options: Any = ds.ParquetFileFormat().make_write_options(compression=self._codec())
        ds.write_dataset(
            pa.RecordBatchReader.from_batches(schema, source),
            folder,
            format="parquet",
            file_options=options,
            partitioning=self.config.partition_by,
            partitioning_flavor="hive" if self.config.partition_by else None,
            basename_template=f"{self.context.run_id}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            max_rows_per_file=self.config.max_rows_per_file,
            max_rows_per_group=min(self.config.max_rows_per_file, 128 * 1024),
            use_threads=False,
        )

    def _codec(self) -> str:
        return "none" if self.config.compression == "none" else self.config.compression


def _run_files(folder: Path, run: str) -> list[Path]:
    return [
        file
        for file in folder.rglob(f"{run}-*.parquet")
        if not any(part.startswith(".") for part in file.relative_to(folder).parts)
    ]


def _dataset_columns(folder: Path) -> set[str] | None:
    """The columns of the dataset's visible files (with partition columns), or None."""
    files = [
        file
        for file in folder.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in file.relative_to(folder).parts)
    ]
    if not files:
        return None
    names: set[str] = set()
    for file in files:
        with contextlib.suppress(*_ARROW_ERRORS, OSError):
            names.update(pq.read_schema(file).names)
        names.update(
            part.split("=", 1)[0] for part in file.relative_to(folder).parts[:-1] if "=" in part
        )
    return names
