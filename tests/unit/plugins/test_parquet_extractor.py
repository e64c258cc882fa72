"""The `parquet` extractor: a file, a folder, a glob; columns; filters; bad files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from common.errors import PathOutsideDataRoot, PermanentError
from plugins.base import validate_config
from plugins.parquet_extractor import ParquetExtractor, ParquetExtractorConfig
from tests.unit.plugins.support import config, context, extract_table


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


def write(path: Path, table: pa.Table, **options: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **options)
    return path


def read(root: Path, progress: list[int] | None = None, **raw: Any) -> pa.Table:
    extractor = ParquetExtractor(
        config(ParquetExtractorConfig, root, **raw), context(root, progress=progress)
    )
    return extract_table(extractor)


def sorted_rows(table: pa.Table, by: str) -> dict[str, list[Any]]:
    return table.sort_by(by).to_pydict()


def test_one_file_streams_in_batches_reporting_progress(root: Path) -> None:
    write(root / "a.parquet", pa.table({"id": list(range(1000))}), row_group_size=100)
    progress: list[int] = []
    table = read(root, progress, path="a.parquet", batch_rows=250)
    assert table.column("id").to_pylist() == list(range(1000))
    assert progress[-1] == 1000 and len(progress) >= 4


def test_a_hive_folder_gives_partition_columns_and_unifies_schemas(root: Path) -> None:
    write(root / "ds" / "year=2024" / "a.parquet", pa.table({"id": [1, 2], "name": ["a", "b"]}))
    write(root / "ds" / "year=2025" / "b.parquet", pa.table({"id": [3.5], "flag": [True]}))
    write(root / "ds" / "_SUCCESS.parquet", pa.table({"junk": [1]}))
    write(root / "ds" / ".hidden" / "x.parquet", pa.table({"junk": [1]}))
    table = read(root, path="ds")
    assert table.schema.field("id").type == pa.float64()
    assert sorted_rows(table, "id") == {
        "id": [1.0, 2.0, 3.5],
        "name": ["a", "b", None],
        "year": [2024, 2024, 2025],
        "flag": [None, None, True],
    }


def test_a_glob_with_columns_and_a_filter(root: Path) -> None:
    for day in (1, 2, 3):
        write(
            root / "ev" / f"day={day}" / "part.parquet",
            pa.table({"id": [day * 10, day * 10 + 1], "kind": ["a", "b"]}),
        )
    table = read(
        root,
        path="ev/*/*.parquet",
        columns=["id", "day"],
        filter=[["day", ">=", 2], ["kind", "in", ["b", "c"]]],
    )
    assert table.schema.names == ["id", "day"]
    assert sorted_rows(table, "id") == {"id": [21, 31], "day": [2, 3]}


@pytest.mark.parametrize(
    ("condition", "ids"),
    [
        (["n", "==", 2], [2]),
        (["n", "=", 2], [2]),
        (["n", "!=", 2], [1, 3]),
        (["n", "<", 2], [1]),
        (["n", "<=", 2], [1, 2]),
        (["n", ">", 2], [3]),
        (["n", "not_in", [1, 3]], [2]),
        (["note", "is_null"], [2]),
        (["note", "is_not_null"], [1, 3]),
        (["at", ">=", "2024-06-01T00:00:00"], [2, 3]),
    ],
)
def test_filter_operators(root: Path, condition: list[Any], ids: list[int]) -> None:
    write(
        root / "a.parquet",
        pa.table(
            {
                "n": [1, 2, 3],
                "note": ["x", None, "z"],
                "at": pa.array(
                    [dt.datetime(2024, 1, 1), dt.datetime(2024, 6, 1), dt.datetime(2025, 1, 1)],
                    pa.timestamp("us"),
                ),
            }
        ),
    )
    assert read(root, path="a.parquet", filter=[condition]).column("n").to_pylist() == ids


def test_a_filter_on_an_unknown_column_is_a_permanent_error(root: Path) -> None:
    write(root / "a.parquet", pa.table({"n": [1]}))
    with pytest.raises(PermanentError, match="filter on 'm': no such column"):
        read(root, path="a.parquet", filter=[["m", "==", 1]])


def test_a_filter_value_of_the_wrong_type_is_a_permanent_error(root: Path) -> None:
    write(root / "a.parquet", pa.table({"n": [1]}))
    with pytest.raises(PermanentError, match="filter on 'n'"):
        read(root, path="a.parquet", filter=[["n", ">", "many"]])


def test_an_unknown_column_is_a_permanent_error_listing_the_columns(root: Path) -> None:
    write(root / "a.parquet", pa.table({"n": [1]}))
    with pytest.raises(PermanentError, match="no column 'x'; columns: n"):
        read(root, path="a.parquet", columns=["x"])


def test_a_truncated_file_is_a_permanent_error_naming_it(root: Path) -> None:
    path = write(root / "ds" / "good.parquet", pa.table({"n": list(range(100))}))
    data = path.read_bytes()
    (root / "ds" / "truncated.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(PermanentError, match=r"truncated\.parquet: not a readable Parquet"):
        read(root, path="ds")


def test_a_csv_named_parquet_is_a_permanent_error(root: Path) -> None:
    (root / "fake.parquet").write_text("a,b\n1,2\n")
    with pytest.raises(PermanentError, match=r"fake\.parquet"):
        read(root, path="fake.parquet")


def test_corrupt_pages_are_a_permanent_error_naming_the_file(root: Path) -> None:
    path = write(
        root / "c.parquet",
        pa.table({"s": [f"value-{i}" * 20 for i in range(5000)]}),
        compression="none",
    )
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = b"\xff" * 2000
    path.write_bytes(bytes(data))
    with pytest.raises(PermanentError, match=r"c\.parquet"):
        read(root, path="c.parquet")


def test_missing_file_and_empty_folder_are_permanent_errors(root: Path) -> None:
    with pytest.raises(PermanentError, match="no such file"):
        read(root, path="nope.parquet")
    (root / "empty").mkdir()
    with pytest.raises(PermanentError, match="no Parquet file"):
        read(root, path="empty")


def test_a_symlink_out_of_the_root_inside_a_folder_is_refused(root: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "secret.parquet", pa.table({"n": [1]}))
    write(root / "ds" / "ok.parquet", pa.table({"n": [2]}))
    (root / "ds" / "link.parquet").symlink_to(outside)
    with pytest.raises(PathOutsideDataRoot):
        read(root, path="ds")


@pytest.mark.parametrize(
    "raw",
    [
        {"path": "../x.parquet"},
        {"path": "/etc/passwd"},
        {"path": "a.parquet", "columns": []},
        {"path": "a.parquet", "filter": [["n", "~=", 1]]},
        {"path": "a.parquet", "filter": [["n", "in", 1]]},
        {"path": "a.parquet", "filter": [["n", "==", None]]},
        {"path": "a.parquet", "filter": [["n", "is_null", 1]]},
        {"path": "a.parquet", "filter": [["n"]]},
        {"path": "a.parquet", "filter": "n > 1"},
        {"path": "a.parquet", "filter": [["", "==", 1]]},
        {"path": "a.parquet", "filter": [["n", "==", {"a": 1}]]},
    ],
)
def test_bad_configs_are_rejected(root: Path, raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_config(ParquetExtractorConfig, raw, root)
