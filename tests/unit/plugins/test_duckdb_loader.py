from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from pydantic import ValidationError

from common.errors import PermanentError, TransientError
from plugins.base import TaskContext, validate_config
from plugins.duckdb_loader import DuckDBConfig, DuckDBLoader

BATCH = pa.record_batch({"id": [1, 2, 3], "name": ["a", "b", "c"]})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    return root


def loader(root: Path, run_id: uuid.UUID, **raw: Any) -> DuckDBLoader:
    raw = {"database": "out/db.duckdb", "table": "people", **raw}
    config = validate_config(DuckDBConfig, raw, root)
    assert isinstance(config, DuckDBConfig)
    context = TaskContext(
        job_definition_id=uuid.uuid4(),
        run_id=run_id,
        task_id=uuid.uuid4(),
        attempt=1,
        data_root=root,
    )
    return DuckDBLoader(config, context)


def load(root: Path, run_id: uuid.UUID, *batches: pa.RecordBatch, **raw: Any) -> int:
    schema = batches[0].schema if batches else BATCH.schema
    return loader(root, run_id, **raw).load(schema, iter(batches))


def query(root: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(root / "out" / "db.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_first_load_creates_the_table_with_the_run_column(root: Path) -> None:
    run_id = uuid.uuid4()
    assert load(root, run_id, BATCH, BATCH) == 6
    assert query(root, "SELECT column_name, data_type FROM information_schema.columns") == [
        ("id", "BIGINT"),
        ("name", "VARCHAR"),
        ("_orc_run_id", "VARCHAR"),
    ]
    assert query(root, "SELECT count(*), min(_orc_run_id) FROM people") == [(6, str(run_id))]


def test_append_twice_with_the_same_run_writes_the_rows_once(root: Path) -> None:
    run_id = uuid.uuid4()
    assert load(root, run_id, BATCH) == 3
    assert load(root, run_id, BATCH) == 3
    assert query(root, "SELECT id FROM people ORDER BY id") == [(1,), (2,), (3,)]


def test_append_with_two_runs_keeps_both(root: Path) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    load(root, first, BATCH)
    load(root, second, BATCH)
    assert query(root, "SELECT _orc_run_id, count(*) FROM people GROUP BY 1 ORDER BY 1") == sorted(
        [(str(first), 3), (str(second), 3)]
    )


def test_replace_keeps_only_the_last_run(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH)
    last = uuid.uuid4()
    other = pa.record_batch({"code": ["x"]})
    assert load(root, last, other, mode="replace") == 1
    assert query(root, "SELECT * FROM people") == [("x", str(last))]


def test_new_column_is_added_and_missing_column_is_null(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH)
    wider = pa.record_batch({"id": [4], "name": ["d"], "age": [40]})
    load(root, uuid.uuid4(), wider)
    narrower = pa.record_batch({"id": [5]})
    load(root, uuid.uuid4(), narrower)
    assert query(root, "SELECT id, name, age FROM people ORDER BY id") == [
        (1, "a", None),
        (2, "b", None),
        (3, "c", None),
        (4, "d", 40),
        (5, None, None),
    ]


def test_column_order_of_the_batch_does_not_matter(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH)
    load(root, uuid.uuid4(), pa.record_batch({"name": ["z"], "id": [9]}))
    assert query(root, "SELECT id, name FROM people WHERE id = 9") == [(9, "z")]


def test_schema_qualified_table_creates_the_schema(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH, table="sales.people")
    assert query(root, "SELECT count(*) FROM sales.people") == [(3,)]


def test_no_batches_creates_an_empty_table(root: Path) -> None:
    assert load(root, uuid.uuid4()) == 0
    assert query(root, "SELECT count(*) FROM people") == [(0,)]


def test_an_all_null_column_becomes_text(root: Path) -> None:
    batch = pa.record_batch({"id": [1], "note": pa.nulls(1)})
    load(root, uuid.uuid4(), batch)
    load(root, uuid.uuid4(), pa.record_batch({"id": [2], "note": ["later"]}))
    assert query(root, "SELECT note FROM people ORDER BY id") == [(None,), ("later",)]


def test_failure_while_reading_batches_rolls_back_and_keeps_its_type(root: Path) -> None:
    run_id = uuid.uuid4()
    load(root, run_id, BATCH)

    def flaky() -> Iterator[pa.RecordBatch]:
        yield BATCH
        raise TransientError("staging went away")

    with pytest.raises(TransientError, match="staging went away"):
        loader(root, run_id).load(BATCH.schema, flaky())
    assert query(root, "SELECT count(*) FROM people") == [(3,)]


def test_type_clash_with_the_table_is_a_permanent_error(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH)
    with pytest.raises(PermanentError):
        load(root, uuid.uuid4(), pa.record_batch({"id": ["not a number"]}))


def test_engine_column_names_in_the_batch_are_rejected(root: Path) -> None:
    with pytest.raises(PermanentError, match="reserved"):
        load(root, uuid.uuid4(), pa.record_batch({"_ORC_run_id": ["x"]}))


def test_loads_into_one_file_from_threads_take_turns(root: Path) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            load(root, uuid.uuid4(), BATCH)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert query(root, "SELECT count(*) FROM people") == [(12,)]


@pytest.mark.slow
def test_a_lock_held_by_another_process_is_transient(root: Path) -> None:
    database = root / "out" / "db.duckdb"
    database.parent.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()",
            str(database),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TransientError, match="lock"):
            load(root, uuid.uuid4(), BATCH)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()


@pytest.mark.parametrize(
    "table",
    [
        'people"; DROP TABLE x; --',
        "people; DROP TABLE x",
        "a.b.c",
        "1people",
        "peo ple",
        "",
        "people.",
    ],
)
def test_table_name_injection_is_rejected_by_the_config(root: Path, table: str) -> None:
    with pytest.raises(ValidationError):
        validate_config(DuckDBConfig, {"database": "db.duckdb", "table": table}, root)


@pytest.mark.parametrize(
    "raw",
    [
        {"database": "../db.duckdb", "table": "t"},
        {"database": "/tmp/elsewhere.duckdb", "table": "t"},
        {"database": "data.csv", "table": "t"},
        {"database": "db.duckdb", "table": "t", "mode": "upsert"},
    ],
)
def test_bad_config_is_rejected(root: Path, raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_config(DuckDBConfig, raw, root)


def test_config_model_is_declared() -> None:
    assert DuckDBLoader.config_model is DuckDBConfig


def test_merge_upserts_on_the_key_and_the_last_duplicate_wins(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH, mode="merge", key_columns=["id"])
    update = pa.record_batch({"id": [2, 4, 4], "name": ["B", "d", "D"]})
    assert load(root, uuid.uuid4(), update, mode="merge", key_columns=["id"]) == 3
    assert query(root, "SELECT id, name FROM people ORDER BY id") == [
        (1, "a"),
        (2, "B"),
        (3, "c"),
        (4, "D"),
    ]


def test_merge_on_a_composite_key(root: Path) -> None:
    first = pa.record_batch({"k1": [1, 1], "k2": ["x", "y"], "v": [1, 2]})
    load(root, uuid.uuid4(), first, mode="merge", key_columns=["k1", "k2"])
    second = pa.record_batch({"k1": [1], "k2": ["y"], "v": [20]})
    load(root, uuid.uuid4(), second, mode="merge", key_columns=["k1", "k2"])
    assert query(root, "SELECT k1, k2, v FROM people ORDER BY k2") == [(1, "x", 1), (1, "y", 20)]


def test_merge_twice_with_the_same_run_is_as_once(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH, mode="merge", key_columns=["id"])
    run_id = uuid.uuid4()
    update = pa.record_batch({"id": [3, 5], "name": ["C", "e"]})
    load(root, run_id, update, mode="merge", key_columns=["id"])
    once = query(root, "SELECT * FROM people ORDER BY id")
    load(root, run_id, update, mode="merge", key_columns=["id"])
    assert query(root, "SELECT * FROM people ORDER BY id") == once
    assert [row[:2] for row in once] == [(1, "a"), (2, "b"), (3, "C"), (5, "e")]


def test_replace_twice_with_the_same_run_is_as_once(root: Path) -> None:
    run_id = uuid.uuid4()
    load(root, run_id, BATCH, mode="replace")
    load(root, run_id, BATCH, mode="replace")
    assert query(root, "SELECT count(*) FROM people") == [(3,)]


def test_merge_with_a_null_key_fails_and_leaves_the_table(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH, mode="merge", key_columns=["id"])
    bad = pa.record_batch({"id": pa.array([7, None], pa.int64()), "name": ["g", "h"]})
    with pytest.raises(PermanentError, match="merge key column 'id' is null in 1 row"):
        load(root, uuid.uuid4(), bad, mode="merge", key_columns=["id"])
    assert query(root, "SELECT count(*) FROM people") == [(3,)]


def test_merge_key_missing_from_the_source_is_a_permanent_error(root: Path) -> None:
    with pytest.raises(PermanentError, match=r"merge key column.*'code'"):
        load(root, uuid.uuid4(), BATCH, mode="merge", key_columns=["code"])


def test_strict_schema_policy_names_the_new_columns(root: Path) -> None:
    load(root, uuid.uuid4(), BATCH)
    wider = pa.record_batch({"id": [4], "name": ["d"], "age": [40], "city": ["x"]})
    with pytest.raises(
        PermanentError, match=r"no column 'age', 'city' and schema_policy is strict"
    ):
        load(root, uuid.uuid4(), wider, schema_policy="strict")
    assert query(root, "SELECT count(*) FROM people") == [(3,)]
    # The same columns, or fewer, are fine under strict.
    assert load(root, uuid.uuid4(), pa.record_batch({"id": [5]}), schema_policy="strict") == 1


def test_merge_needs_key_columns_in_the_config(root: Path) -> None:
    with pytest.raises(ValidationError, match="key_columns"):
        validate_config(DuckDBConfig, {"database": "d.duckdb", "table": "t", "mode": "merge"}, root)
