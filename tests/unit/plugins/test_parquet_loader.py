"""The `parquet` loader: a file or a partitioned dataset, idempotent per run."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from common.errors import PermanentError, TransientError
from plugins.base import validate_config
from plugins.parquet_loader import ParquetLoader, ParquetLoaderConfig
from tests.unit.plugins.support import config, context

BATCH = pa.record_batch({"id": [1, 2, 3], "country": ["DE", "FR", "DE"]})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


def load(root: Path, run_id: uuid.UUID, *batches: pa.RecordBatch, **raw: Any) -> int:
    schema = batches[0].schema if batches else BATCH.schema
    loader = ParquetLoader(config(ParquetLoaderConfig, root, **raw), context(root, run_id))
    return loader.load(schema, iter(batches))


def dataset(path: Path) -> dict[str, list[Any]]:
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table()
    return table.sort_by("id").to_pydict()


def visible_files(path: Path) -> list[str]:
    return sorted(
        str(p.relative_to(path))
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def test_a_file_is_written_and_rewritten_per_run(root: Path) -> None:
    assert load(root, uuid.uuid4(), BATCH, path="out/a.parquet") == 3
    assert pq.read_table(root / "out" / "a.parquet").to_pydict() == BATCH.to_pydict()
    other = pa.record_batch({"id": [9]})
    load(root, uuid.uuid4(), other, path="out/a.parquet")
    assert pq.read_table(root / "out" / "a.parquet").to_pydict() == {"id": [9]}
    assert [p.name for p in (root / "out").iterdir()] == ["a.parquet"]


def test_a_file_loaded_twice_by_one_run_is_as_once(root: Path) -> None:
    run_id = uuid.uuid4()
    load(root, run_id, BATCH, BATCH, path="a.parquet")
    load(root, run_id, BATCH, BATCH, path="a.parquet")
    assert pq.read_table(root / "a.parquet").num_rows == 6


def test_no_batches_write_an_empty_file_with_the_columns(root: Path) -> None:
    assert load(root, uuid.uuid4(), path="a.parquet") == 0
    table = pq.read_table(root / "a.parquet")
    assert (table.num_rows, table.schema.names) == (0, ["id", "country"])


def test_a_dataset_gets_a_partition_folder_per_value(root: Path) -> None:
    run_id = uuid.uuid4()
    load(root, run_id, BATCH, path="out/ds", partition_by=["country"])
    assert visible_files(root / "out" / "ds") == [
        f"country=DE/{run_id}-0.parquet",
        f"country=FR/{run_id}-0.parquet",
    ]
    assert dataset(root / "out" / "ds") == {"id": [1, 2, 3], "country": ["DE", "FR", "DE"]}


def test_append_adds_runs_and_the_same_run_twice_is_as_once(root: Path) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    load(root, first, BATCH, path="ds", partition_by=["country"])
    load(
        root,
        second,
        pa.record_batch({"id": [4], "country": ["IT"]}),
        path="ds",
        partition_by=["country"],
    )
    once = visible_files(root / "ds")
    load(
        root,
        second,
        pa.record_batch({"id": [4], "country": ["IT"]}),
        path="ds",
        partition_by=["country"],
    )
    assert visible_files(root / "ds") == once
    assert dataset(root / "ds")["id"] == [1, 2, 3, 4]


def test_a_retry_with_other_partitions_removes_what_the_first_try_left(root: Path) -> None:
    run_id = uuid.uuid4()
    load(root, run_id, BATCH, path="ds", partition_by=["country"])
    load(
        root,
        run_id,
        pa.record_batch({"id": [1], "country": ["ES"]}),
        path="ds",
        partition_by=["country"],
    )
    assert dataset(root / "ds") == {"id": [1], "country": ["ES"]}


def test_replace_swaps_the_whole_dataset(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH, path="ds", partition_by=["country"])
    run_id = uuid.uuid4()
    for _ in range(2):
        load(
            root,
            run_id,
            pa.record_batch({"id": [7], "country": ["NL"]}),
            path="ds",
            mode="replace",
            partition_by=["country"],
        )
    assert dataset(root / "ds") == {"id": [7], "country": ["NL"]}
    assert sorted(p.name for p in root.iterdir()) == ["ds"]


def test_a_failing_source_leaves_the_dataset_as_it_was(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH, path="ds")

    def flaky() -> Iterator[pa.RecordBatch]:
        yield BATCH
        raise TransientError("staging went away")

    loader = ParquetLoader(config(ParquetLoaderConfig, root, path="ds"), context(root))
    with pytest.raises(TransientError, match="staging went away"):
        loader.load(BATCH.schema, flaky())
    assert dataset(root / "ds")["id"] == [1, 2, 3]
    assert [p.name for p in (root / "ds").iterdir() if p.name.startswith(".")] == []


def test_evolve_writes_new_columns_and_strict_names_them(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH, path="ds", partition_by=["country"])
    wider = pa.record_batch({"id": [5], "country": ["DE"], "age": [50]})
    with pytest.raises(PermanentError, match=r"no column 'age' and schema_policy is strict"):
        load(root, uuid.uuid4(), wider, path="ds", partition_by=["country"], schema_policy="strict")
    load(
        root,
        uuid.uuid4(),
        pa.record_batch({"id": [6], "country": ["DE"]}),
        path="ds",
        partition_by=["country"],
        schema_policy="strict",
    )
    load(root, uuid.uuid4(), wider, path="ds", partition_by=["country"])
    files = [f for f in (root / "ds").rglob("*.parquet")]
    assert any("age" in pq.read_schema(f).names for f in files)


def test_a_partition_column_missing_from_the_data_is_a_permanent_error(root: Path) -> None:
    with pytest.raises(PermanentError, match="partition column 'region'"):
        load(root, uuid.uuid4(), BATCH, path="ds", partition_by=["region"])


@pytest.mark.parametrize(
    "raw",
    [
        {"path": "a.parquet", "mode": "append"},
        {"path": "a.parquet", "partition_by": ["x"]},
        {"path": "../ds"},
        {"path": "ds", "mode": "merge"},
        {"path": "ds", "compression": "lz5"},
    ],
)
def test_bad_configs_are_rejected(root: Path, raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_config(ParquetLoaderConfig, raw, root)


def test_default_mode_depends_on_the_target(root: Path) -> None:
    assert config(ParquetLoaderConfig, root, path="a.parquet").effective_mode == "replace"
    assert config(ParquetLoaderConfig, root, path="ds").effective_mode == "append"
