from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.errors import PermanentError
from common.events import StagedData
from common.staging import StagingArea, peek

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def batch(start: int, rows: int) -> pa.RecordBatch:
    ids = list(range(start, start + rows))
    return pa.record_batch([pa.array(ids), pa.array([f"n{i}" for i in ids])], schema=SCHEMA)


def read_table(area: StagingArea, staged: StagedData) -> pa.Table:
    schema, batches = area.read(staged)
    return pa.Table.from_batches(list(batches), schema=schema)


@pytest.fixture
def area(tmp_path: Path) -> StagingArea:
    return StagingArea(str(tmp_path / "staging"))


def test_round_trip_of_three_batches(area: StagingArea, tmp_path: Path) -> None:
    run_id, task_id = uuid.uuid4(), uuid.uuid4()
    batches = [batch(0, 10), batch(10, 5), batch(15, 7)]
    staged = area.write(run_id, task_id, batches)
    assert staged.rows == 22
    assert staged.columns == {"id": "int64", "name": "string"}
    folder = (tmp_path / "staging" / str(run_id) / str(task_id)).as_uri()
    assert staged.uri == folder
    assert all(file.startswith(f"{folder}/") for file in staged.files)
    assert read_table(area, staged).equals(pa.Table.from_batches(batches))


def test_parts_roll_over_by_row_count(tmp_path: Path) -> None:
    area = StagingArea(str(tmp_path / "staging"), rows_per_file=10)
    batches = [batch(i * 6, 6) for i in range(5)]
    staged = area.write(uuid.uuid4(), uuid.uuid4(), batches)
    assert len(staged.files) == 3
    assert read_table(area, staged).equals(pa.Table.from_batches(batches))


def test_rewriting_a_task_replaces_what_it_staged(tmp_path: Path) -> None:
    area = StagingArea(str(tmp_path / "staging"), rows_per_file=5)
    run_id, task_id = uuid.uuid4(), uuid.uuid4()
    first = area.write(run_id, task_id, [batch(0, 5), batch(5, 5), batch(10, 5)])
    second = area.write(run_id, task_id, [batch(100, 2)])
    assert second.rows == 2
    assert read_table(area, second).column("id").to_pylist() == [100, 101]
    folder = tmp_path / "staging" / str(run_id) / str(task_id)
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000.arrow"]
    assert len(first.files) == 3


def test_zero_batches_with_a_known_schema_stage_an_empty_file(area: StagingArea) -> None:
    staged = area.write(uuid.uuid4(), uuid.uuid4(), [], schema=SCHEMA)
    assert staged.rows == 0
    assert len(staged.files) == 1
    assert staged.columns == {"id": "int64", "name": "string"}
    schema, batches = area.read(staged)
    assert schema == SCHEMA
    assert sum(b.num_rows for b in batches) == 0


def test_an_empty_reader_gives_its_schema(area: StagingArea) -> None:
    reader = pa.RecordBatchReader.from_batches(SCHEMA, iter([]))
    staged = area.write(uuid.uuid4(), uuid.uuid4(), reader)
    assert staged.columns == {"id": "int64", "name": "string"}


def test_zero_batches_without_a_schema_stage_nothing(area: StagingArea) -> None:
    staged = area.write(uuid.uuid4(), uuid.uuid4(), iter([]))
    assert (staged.rows, staged.files, staged.columns) == (0, (), {})
    schema, batches = area.read(staged)
    assert len(schema) == 0
    assert list(batches) == []


def test_a_changed_schema_mid_stream_starts_a_part_and_reads_unified(area: StagingArea) -> None:
    narrower = pa.record_batch({"id": [1.5]})
    wider = pa.record_batch({"id": [7], "name": ["z"], "extra": [True]})
    staged = area.write(uuid.uuid4(), uuid.uuid4(), [batch(0, 1), narrower, wider])
    assert len(staged.files) == 3
    assert staged.columns == {"id": "double", "name": "string", "extra": "bool"}
    table = read_table(area, staged)
    assert table.to_pydict() == {
        "id": [0.0, 1.5, 7.0],
        "name": ["n0", None, "z"],
        "extra": [None, None, True],
    }


def test_batches_whose_columns_cannot_agree_are_a_permanent_error(area: StagingArea) -> None:
    other = pa.record_batch({"id": ["text"]})
    with pytest.raises(PermanentError, match="disagree"):
        area.write(uuid.uuid4(), uuid.uuid4(), [batch(0, 1), other])


def test_remove_older_than_keeps_recent_and_running_runs(area: StagingArea) -> None:
    old, running, recent = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for run_id in (old, running, recent):
        area.write(run_id, uuid.uuid4(), [batch(0, 1)])
    base = Path(area._base)
    (base / "not-a-run").mkdir()
    for run_id in (old, running):
        for file in (base / str(run_id)).rglob("*.arrow"):
            os.utime(file, (0, 0))
    removed = area.remove_older_than(timedelta(hours=1), keep={running})
    assert removed == [old]
    assert sorted(p.name for p in base.iterdir()) == sorted(
        [str(running), str(recent), "not-a-run"]
    )
    assert area.remove_older_than(timedelta(hours=1), keep={running}) == []


def test_remove_older_than_on_a_missing_base_removes_nothing(tmp_path: Path) -> None:
    assert StagingArea(str(tmp_path / "never")).remove_older_than(timedelta(0)) == []


def test_remove_deletes_a_run_and_tolerates_a_missing_one(
    area: StagingArea, tmp_path: Path
) -> None:
    run_id, other_run = uuid.uuid4(), uuid.uuid4()
    area.write(run_id, uuid.uuid4(), [batch(0, 1)])
    area.write(other_run, uuid.uuid4(), [batch(0, 1)])
    area.remove(run_id)
    area.remove(run_id)
    assert not (tmp_path / "staging" / str(run_id)).exists()
    assert (tmp_path / "staging" / str(other_run)).exists()


def test_a_relative_url_is_resolved_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    area = StagingArea("rel/staging")
    staged = area.write(uuid.uuid4(), uuid.uuid4(), [batch(0, 3)])
    assert staged.uri.startswith((tmp_path / "rel" / "staging").resolve().as_uri())
    monkeypatch.chdir("/")
    assert read_table(area, staged).num_rows == 3


def test_a_file_uri_url_works_like_a_folder(tmp_path: Path) -> None:
    area = StagingArea((tmp_path / "staging").as_uri())
    staged = area.write(uuid.uuid4(), uuid.uuid4(), [batch(0, 3)])
    assert read_table(area, staged).num_rows == 3


@pytest.mark.parametrize(
    "file",
    ["file:///etc/passwd", "{base}/../../outside.parquet"],
)
def test_reading_outside_the_staging_area_is_refused(
    area: StagingArea, tmp_path: Path, file: str
) -> None:
    base = (tmp_path / "staging").resolve().as_uri()
    staged = StagedData(uri=base, files=(file.format(base=base),), rows=1)
    with pytest.raises(PermanentError):
        area.read(staged)


def test_peek_keeps_every_batch() -> None:
    first, rest = peek(iter([batch(0, 1), batch(1, 1)]))
    assert first is not None
    assert first.num_rows == 1
    assert [b.column(0)[0].as_py() for b in rest] == [0, 1]
    assert peek([])[0] is None


def test_a_small_result_travels_inline_and_writes_no_file(tmp_path: Path) -> None:
    area = StagingArea(str(tmp_path / "staging"), inline_bytes=4096)
    batches = [batch(0, 3), batch(3, 2)]
    staged = area.write(uuid.uuid4(), uuid.uuid4(), batches)
    assert staged.inline is not None and staged.files == ()
    assert (staged.rows, staged.columns) == (5, {"id": "int64", "name": "string"})
    assert not (tmp_path / "staging").exists()
    # What rides the bus is the model's JSON: the rows survive the round trip.
    again = StagedData.model_validate_json(staged.model_dump_json())
    assert read_table(area, again).equals(pa.Table.from_batches(batches))


def test_a_result_over_the_inline_limit_is_staged_as_files(tmp_path: Path) -> None:
    area = StagingArea(str(tmp_path / "staging"), inline_bytes=256)
    batches = [batch(i * 20, 20) for i in range(5)]
    staged = area.write(uuid.uuid4(), uuid.uuid4(), batches)
    assert staged.inline is None and len(staged.files) == 1
    assert read_table(area, staged).equals(pa.Table.from_batches(batches))


def test_a_small_result_whose_schema_changes_is_staged_as_files(tmp_path: Path) -> None:
    area = StagingArea(str(tmp_path / "staging"), inline_bytes=4096)
    wider = pa.record_batch([pa.array([9]), pa.array(["x"]), pa.array([1.5])], ["id", "name", "v"])
    staged = area.write(uuid.uuid4(), uuid.uuid4(), [batch(0, 2), wider])
    assert staged.inline is None and len(staged.files) == 2
    assert staged.rows == 3


def test_an_empty_result_keeps_its_columns_in_a_file(tmp_path: Path) -> None:
    area = StagingArea(str(tmp_path / "staging"), inline_bytes=4096)
    staged = area.write(uuid.uuid4(), uuid.uuid4(), pa.RecordBatchReader.from_batches(SCHEMA, []))
    assert staged.inline is None and staged.rows == 0
    schema, batches = area.read(staged)
    assert schema == SCHEMA and list(batches) == []


def test_inline_data_that_is_not_arrow_fails_for_good(area: StagingArea) -> None:
    staged = StagedData(uri="file:///x", files=(), rows=1, inline="bm90IGFycm93")
    with pytest.raises(PermanentError, match="not an Arrow IPC stream"):
        area.read(staged)


def test_parquet_parts_staged_by_an_earlier_version_are_still_read(
    area: StagingArea, tmp_path: Path
) -> None:
    """Runs in flight across an upgrade: their extract staged Parquet, their load reads it."""
    staged = area.write(uuid.uuid4(), uuid.uuid4(), [batch(0, 3)])
    (arrow_file,) = (tmp_path / "staging").rglob("*.arrow")
    parquet_file = arrow_file.with_suffix(".parquet")
    pq.write_table(pa.Table.from_batches([batch(0, 3)]), parquet_file)
    arrow_file.unlink()
    old = staged.model_copy(update={"files": (staged.files[0].replace(".arrow", ".parquet"),)})
    assert read_table(area, old).equals(pa.Table.from_batches([batch(0, 3)]))


def test_a_damaged_part_file_is_a_permanent_error(area: StagingArea, tmp_path: Path) -> None:
    staged = area.write(uuid.uuid4(), uuid.uuid4(), [batch(0, 3)])
    (arrow_file,) = (tmp_path / "staging").rglob("*.arrow")
    arrow_file.write_bytes(arrow_file.read_bytes()[:40])
    with pytest.raises(PermanentError, match="is not readable"):
        area.read(staged)


def test_a_small_result_read_back_in_the_process_that_staged_it_is_not_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    area = StagingArea(str(tmp_path / "staging"), inline_bytes=4096)
    batches = [batch(0, 3)]
    staged = area.write(uuid.uuid4(), uuid.uuid4(), batches)

    def undecodable(data: str) -> pa.Table:
        raise AssertionError("decoded although this process staged it")

    monkeypatch.setattr("common.staging._from_inline", undecodable)
    assert read_table(area, staged).equals(pa.Table.from_batches(batches))
    # Read once: a second read (a retried load) decodes the text, as another process would.
    with pytest.raises(AssertionError, match="decoded"):
        area.read(staged)


def test_another_process_decodes_a_small_result(tmp_path: Path) -> None:
    batches = [batch(0, 3)]
    staged = StagingArea(str(tmp_path / "a"), inline_bytes=4096).write(
        uuid.uuid4(), uuid.uuid4(), batches
    )
    other = StagingArea(str(tmp_path / "b"), inline_bytes=4096)
    assert read_table(other, staged).equals(pa.Table.from_batches(batches))


def test_results_never_read_back_are_not_kept_without_bound(tmp_path: Path) -> None:
    from common.staging import REMEMBERED_INLINE_RESULTS

    area = StagingArea(str(tmp_path / "staging"), inline_bytes=4096)
    first = area.write(uuid.uuid4(), uuid.uuid4(), [batch(0, 1)])
    for i in range(REMEMBERED_INLINE_RESULTS):
        area.write(uuid.uuid4(), uuid.uuid4(), [batch(i + 1, 1)])
    assert len(area._recent) == REMEMBERED_INLINE_RESULTS
    assert first.inline not in area._recent
    assert read_table(area, first).equals(pa.Table.from_batches([batch(0, 1)]))
