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
    with pytest.raises(PermanentError, match=r"bad\.csv at row 20002: malformed"):
        read(root, path="bad.csv", block_size_bytes=16 * 1024)


def test_type_change_after_the_first_block_is_a_clear_permanent_error(root: Path) -> None:
    lines = "".join(f"{i}\n" for i in range(20_000))
    (root / "drift.csv").write_text(f"n\n{lines}not-a-number\n")
    with pytest.raises(
        PermanentError, match=r"drift\.csv at row 20002, column 'n': a value does not fit"
    ):
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


def test_quoted_fields_with_delimiters_quotes_and_line_breaks(root: Path) -> None:
    (root / "q.csv").write_text('id,text\n1,"a, b"\n2,"say ""hi"""\n3,"two\nlines"\n')
    table = read(root, path="q.csv", newlines_in_values=True)
    assert table.column("text").to_pylist() == ["a, b", 'say "hi"', "two\nlines"]


def test_other_quote_and_escape_characters(root: Path) -> None:
    (root / "q.csv").write_text("id|text\n1|'a|b'\n2|c\\|d\n")
    table = read(root, path="q.csv", delimiter="|", quote_char="'", escape_char="\\")
    assert table.column("text").to_pylist() == ["a|b", "c|d"]


def test_quoting_can_be_off(root: Path) -> None:
    (root / "q.csv").write_text('id,text\n1,"a"\n')
    assert read(root, path="q.csv", quote_char=None).column("text").to_pylist() == ['"a"']


def test_given_column_types_win_over_inference(root: Path) -> None:
    (root / "t.csv").write_text(
        "id,code,amount,day,at\n1,007,1.50,2024-01-02,2024-01-02 03:04:05Z\n"
    )
    table = read(
        root,
        path="t.csv",
        column_types={
            "code": "string",
            "amount": "decimal128(10, 2)",
            "day": "date32",
            "at": "timestamp[ms, tz=UTC]",
        },
    )
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("code").type == pa.string()
    assert table.schema.field("amount").type == pa.decimal128(10, 2)
    assert table.schema.field("day").type == pa.date32()
    assert table.schema.field("at").type == pa.timestamp("ms", tz="UTC")
    assert table.column("code").to_pylist() == ["007"]


def test_a_value_that_does_not_fit_a_given_type_names_row_and_column(root: Path) -> None:
    (root / "t.csv").write_text("id,n\n1,2\n2,x\n")
    with pytest.raises(PermanentError, match=r"t\.csv at row 3, column 'n': a value does not fit"):
        read(root, path="t.csv", column_types={"n": "int32"})


def test_names_for_a_file_without_header_and_null_values(root: Path) -> None:
    (root / "a.csv").write_text("1,-\n2,bob\n")
    table = read(
        root, path="a.csv", has_header=False, column_names=["id", "name"], null_values=["-"]
    )
    assert table.to_pydict() == {"id": [1, 2], "name": [None, "bob"]}


def test_names_replace_a_header_row(root: Path) -> None:
    (root / "a.csv").write_text("ID,Name\n1,ann\n")
    assert read(root, path="a.csv", column_names=["id", "name"]).to_pydict() == {
        "id": [1],
        "name": ["ann"],
    }


def test_gzip_and_zstd_files_are_read_by_extension(root: Path) -> None:
    import gzip

    with gzip.open(root / "a.csv.gz", "wt") as f:
        f.write("id\n1\n2\n")
    with pa.output_stream(str(root / "b.csv.zst"), compression="zstd") as out:
        out.write(b"id\n3\n")
    assert read(root, path="a.csv.gz").column("id").to_pylist() == [1, 2]
    assert read(root, path="b.csv.zst").column("id").to_pylist() == [3]


def test_compression_can_be_given_for_a_file_without_extension(root: Path) -> None:
    import gzip

    (root / "data").write_bytes(gzip.compress(b"id\n5\n"))
    assert read(root, path="data", compression="gzip").column("id").to_pylist() == [5]


def test_a_corrupt_gzip_file_is_a_permanent_error_naming_it(root: Path) -> None:
    (root / "broken.csv.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(PermanentError, match=r"broken\.csv\.gz"):
        read(root, path="broken.csv.gz")


def test_a_glob_reads_the_matching_files_in_order(root: Path) -> None:
    (root / "in" / "sub").mkdir(parents=True)
    (root / "in" / "b.csv").write_text("id,score\n3,1.5\n")
    (root / "in" / "a.csv").write_text("id,score\n1,1\n2,2\n")
    (root / "in" / "sub" / "c.csv").write_text("id,score,extra\n4,2,x\n")
    (root / "in" / "skip.txt").write_text("id\n9\n")
    batches = list(extractor(root, path="in/*.csv").extract())
    assert [b.column("id").to_pylist() for b in batches] == [[1, 2], [3]]
    # Each file infers its own types; staging widens int64 and double into double.
    assert [b.schema.field("score").type for b in batches] == [pa.int64(), pa.float64()]
    deep = pa.Table.from_batches(
        [b.select(["id"]) for b in extractor(root, path="in/**/*.csv").extract()]
    )
    assert deep.column("id").to_pylist() == [1, 2, 3, 4]


def test_files_that_type_a_column_incompatibly_are_an_error_naming_both(root: Path) -> None:
    (root / "a.csv").write_text("id,code\n1,10\n")
    (root / "b.csv").write_text("id,code\n2,A7\n")
    with pytest.raises(
        PermanentError, match=r"b\.csv: column 'code' reads as string here but as int64 in .*a\.csv"
    ):
        read(root, path="*.csv")
    table = read(root, path="*.csv", column_types={"code": "string"})
    assert table.column("code").to_pylist() == ["10", "A7"]


def test_a_glob_without_matches_is_a_permanent_error(root: Path) -> None:
    with pytest.raises(PermanentError, match="no file matches"):
        read(root, path="in/*.csv")


def test_a_glob_cannot_leave_the_data_root(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        validate_config(CsvConfig, {"path": "../*.csv"}, root)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.csv").write_text("x\n1\n")
    (root / "in").mkdir()
    (root / "in" / "link.csv").symlink_to(tmp_path / "outside" / "secret.csv")
    (root / "in" / "ok.csv").write_text("x\n2\n")
    with pytest.raises(PermanentError, match="outside"):
        read(root, path="in/*.csv")


@pytest.mark.parametrize(
    "raw",
    [
        {"path": "a.csv", "column_types": {"a": "int65"}},
        {"path": "a.csv", "column_types": {"a": "__import__('os')"}},
        {"path": "a.csv", "quote_char": ","},
        {"path": "a.csv", "escape_char": "\n"},
        {"path": "a.csv", "column_names": ["a", "a"]},
        {"path": "a.csv", "compression": "lzma"},
    ],
)
def test_more_bad_configs_are_rejected(root: Path, raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_config(CsvConfig, raw, root)
