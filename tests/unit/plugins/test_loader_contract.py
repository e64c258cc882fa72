"""What every file-based loader does alike: progress, and an interruption kept as itself."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from plugins.base import Loader, PluginConfig, TaskContext, validate_config
from plugins.duckdb_loader import DuckDBConfig, DuckDBLoader
from plugins.parquet_loader import ParquetLoader, ParquetLoaderConfig

BATCH = pa.record_batch({"id": [1, 2, 3]})
LOADERS: list[tuple[type[Loader[Any]], type[PluginConfig], dict[str, Any]]] = [
    (DuckDBLoader, DuckDBConfig, {"database": "db.duckdb", "table": "t"}),
    (
        DuckDBLoader,
        DuckDBConfig,
        {"database": "db.duckdb", "table": "t", "mode": "merge", "key_columns": ["id"]},
    ),
    (ParquetLoader, ParquetLoaderConfig, {"path": "out.parquet"}),
    (ParquetLoader, ParquetLoaderConfig, {"path": "ds"}),
]


class Interrupted(Exception):
    """What the worker raises from `report_progress` to stop a cancelled or late task."""


@pytest.mark.parametrize(("cls", "model", "raw"), LOADERS)
def test_progress_is_reported_and_an_interruption_stays_itself(
    tmp_path: Path, cls: type[Loader[Any]], model: type[PluginConfig], raw: dict[str, Any]
) -> None:
    seen: list[int] = []

    def progress(rows: int) -> None:
        seen.append(rows)
        if rows >= 6:
            raise Interrupted("cancelled")

    def context(report: Any) -> TaskContext:
        return TaskContext(
            job_definition_id=uuid.uuid4(),
            run_id=uuid.uuid4(),
            task_id=uuid.uuid4(),
            attempt=1,
            data_root=tmp_path,
            report_progress=report,
        )

    config = validate_config(model, raw, tmp_path)
    assert cls(config, context(seen.append)).load(BATCH.schema, iter([BATCH, BATCH])) == 6
    assert seen == [3]
    seen.clear()
    with pytest.raises(Interrupted, match="cancelled"):
        cls(config, context(progress)).load(BATCH.schema, iter([BATCH, BATCH, BATCH, BATCH]))
    assert seen == [3, 6]
