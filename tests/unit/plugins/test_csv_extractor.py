from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from common.errors import PermanentError
from plugins.base import TaskContext, validate_config
from plugins.csv_extractor import CsvConfig, CsvExtractor


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


def extractor(root: Path, progress: list[int] | None = None, **raw: Any) -> CsvExtractor:
    config = validate_config(CsvConfig, raw, root)
    assert isinstance(config, CsvConfig)
    context = TaskContext(
        job_definition_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        attempt=1,
        data_root=root,
        report_progress=(progress.append if progress is not None else lambda rows: None),
    )
    return CsvExtractor(config, context)


def read(root: Path, **raw: Any) -> pa.Table:
    return pa.Table.from_batches(list(extractor(root, **raw).extract()))


def test_header_names_the_columns_and_types_are_inferred(root: Path) -> None:
    (root / "a.csv").write_text("id,name\n1,ann\n2,bob\n")
    table = read(root, path="a.csv")
    assert table.schema == pa.schema([("id", pa.int64()), ("name", pa.string())])
    assert table.to_pydict() == {"id": [1, 2], "name": ["ann", "bob"]}


def test_without_header_columns_are_f0_f1(root: Path) -> None:
    (root / "a.csv").write_text("1,ann\n2,bob\n")
    table = read(root, path="a.csv", has_header=False)
    assert table.to_pydict() == {"f0": [1, 2], "f1": ["ann", "bob"]}


def test_custom_delimiter(root: Path) -> None:
    (root / "a.csv").write_text("id;name\n1;a,b\n")
    assert read(root, path="a.csv", delimiter=";").to_pydict() == {"id": [1], "name": ["a,b"]}


def test_header_only_file_yields_no_batches(root: Path) -> None:
    (root / "a.csv").write_text("id,name\n")
    assert list(extractor(root, path="a.csv").extract()) == []


def test_large_file_streams_in_several_batches_reporting_progress(root: Path) -> None:
    rows = 100_000
    with (root / "big.csv").open("w") as f:
        f.write("id,name\n")
        f.writelines(f"{i},name-{i}\n" for i in range(rows))
    progress: list[int] = []
    batches = list(extractor(root, progress, path="big.csv", block_size_bytes=64 * 1024).extract())
    assert len(batches) > 5
    assert sum(batch.num_rows for batch in batches) == rows
    assert len(progress) == len(batches)
    assert progress == sorted(progress)
    assert progress[-1] == rows
    assert {batch.schema for batch in batches} == {batches[0].schema}
    ids = pa.Table.from_batches(batches).column("id").to_pylist()
    assert ids == list(range(rows))


def test_malformed_row_is_a_permanent_error_naming_the_file(root: Path) -> None:
    (root / "bad.csv").write_text("a,b\n1,2\n3\n4,5\n")
    with pytest.raises(PermanentError, match=r"bad\.csv.*Expected 2 columns"):
        read(root, path="bad.csv")


def test_malformed_row_in_a_later_block_is_a_permanent_error(root: Path) -> None:
    lines = "".join(f"{i},{i}\n" for i in range(20_000))
    (root / "bad.csv").write_text(f"a,b\n{lines}1,2,3\n")
    with pytest.raises(PermanentError, match=r"bad\.csv.*malformed.*after row"):
        read(root, path="bad.csv", block_size_bytes=16 * 1024)


def test_type_change_after_the_first_block_is_a_clear_permanent_error(root: Path) -> None:
    lines = "".join(f"{i}\n" for i in range(20_000))
    (root / "drift.csv").write_text(f"n\n{lines}not-a-number\n")
    with pytest.raises(PermanentError, match=r"drift\.csv.*inferred from the first"):
        read(root, path="drift.csv", block_size_bytes=16 * 1024)


def test_missing_file_is_a_permanent_error_naming_the_file(root: Path) -> None:
    with pytest.raises(PermanentError, match=r"missing\.csv"):
        read(root, path="missing.csv")


def test_empty_file_is_a_permanent_error(root: Path) -> None:
    (root / "empty.csv").write_text("")
    with pytest.raises(PermanentError, match=r"empty\.csv"):
        read(root, path="empty.csv")


def test_folder_instead_of_a_file_is_a_permanent_error(root: Path) -> None:
    (root / "folder.csv").mkdir()
    with pytest.raises(PermanentError, match=r"folder\.csv"):
        read(root, path="folder.csv")


@pytest.mark.parametrize(
    "raw",
    [
        {"path": "../a.csv"},
        {"path": "a.csv", "delimiter": ";;"},
        {"path": "a.csv", "delimiter": ""},
        {"path": "a.csv", "delimiter": "\n"},
        {"path": "a.csv", "delimiter": '"'},
        {"path": "a.csv", "block_size_bytes": 0},
        {"path": "a.csv", "surprise": 1},
    ],
)
def test_bad_config_is_rejected(root: Path, raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_config(CsvConfig, raw, root)


def test_config_model_is_declared() -> None:
    assert CsvExtractor.config_model is CsvConfig
