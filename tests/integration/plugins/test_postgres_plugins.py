"""The `postgres` extractor and loader against the real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import decimal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from common.errors import PermanentError, TransientError
from plugins.base import validate_config
from plugins.postgres_extractor import PostgresExtractor, PostgresExtractorConfig
from plugins.postgres_loader import PostgresLoader, PostgresLoaderConfig
from tests.integration.plugins.conftest import sql
from tests.unit.plugins.support import config, context

pytestmark = pytest.mark.postgres

BATCH = pa.record_batch({"id": [1, 2, 3], "name": ["a", "b", "c"]})


def extract(
    tmp_path: Path, state: dict[str, Any] | None = None, **raw: Any
) -> tuple[pa.Table, dict[str, Any]]:
    ex = PostgresExtractor(
        config(PostgresExtractorConfig, tmp_path, **raw), context(tmp_path, state=state)
    )
    batches = list(ex.extract())
    table = pa.Table.from_batches(batches) if batches else pa.table({})
    return table, ex.context.state_update


def load(dsn: str, tmp_path: Path, run_id: uuid.UUID, *batches: pa.RecordBatch, **raw: Any) -> int:
    schema = batches[0].schema if batches else BATCH.schema
    raw = {"dsn": dsn, "table": "people", **raw}
    loader = PostgresLoader(
        config(PostgresLoaderConfig, tmp_path, **raw), context(tmp_path, run_id)
    )
    return loader.load(schema, iter(batches))


# --- extractor ----------------------------------------------------------------------------


def test_query_streams_in_batches_with_types(pg_dsn: str, tmp_path: Path) -> None:
    sql(
        pg_dsn,
        "CREATE TABLE t AS SELECT g AS id, 'n' || g AS name, g * 1.5::float8 AS score, "
        "g::numeric(10, 2) AS amount, timestamptz '2024-01-01' + g * interval '1 hour' AS at "
        "FROM generate_series(1, 50000) g",
    )
    progress: list[int] = []
    ex = PostgresExtractor(
        config(
            PostgresExtractorConfig,
            tmp_path,
            dsn=pg_dsn,
            query="SELECT * FROM t ORDER BY id;",
            batch_size_bytes=64 * 1024,
        ),
        context(tmp_path, progress=progress),
    )
    batches = list(ex.extract())
    assert len(batches) > 5
    table = pa.Table.from_batches(batches)
    assert table.num_rows == 50000 and progress[-1] == 50000
    assert table.schema.field("id").type == pa.int32()
    assert table.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("amount").type == pa.string()  # numeric comes as text
    assert table.column("amount")[0].as_py() == "1.00"


def test_incremental_by_a_cursor_column(pg_dsn: str, tmp_path: Path) -> None:
    sql(pg_dsn, "CREATE TABLE ev (id int, at timestamptz)")
    sql(pg_dsn, "INSERT INTO ev VALUES (1, '2024-01-01T00:00:00Z'), (2, '2024-02-01T00:00:00Z')")
    raw = {"dsn": pg_dsn, "query": "SELECT id, at FROM ev", "cursor_column": "at"}
    first, state = extract(tmp_path, **raw)
    assert first.column("id").to_pylist() == [1, 2]
    assert state == {"cursor:at": "2024-02-01T00:00:00+00:00"}

    sql(pg_dsn, "INSERT INTO ev VALUES (3, '2024-03-01T00:00:00Z'), (0, '2023-12-01T00:00:00Z')")
    second, state2 = extract(tmp_path, state=state, **raw)
    assert second.column("id").to_pylist() == [3]
    assert state2 == {"cursor:at": "2024-03-01T00:00:00+00:00"}

    third, state3 = extract(tmp_path, state=state2, **raw)
    assert third.num_rows == 0 and state3 == {}


def test_incremental_with_an_initial_value_and_quotes(pg_dsn: str, tmp_path: Path) -> None:
    sql(pg_dsn, "CREATE TABLE k (code text)")
    sql(pg_dsn, "INSERT INTO k VALUES ('a'), ('b''c'), ('d')")
    raw = {"dsn": pg_dsn, "query": "SELECT code FROM k", "cursor_column": "code"}
    table, state = extract(tmp_path, initial_cursor="b'", **raw)
    assert sorted(table.column("code").to_pylist()) == ["b'c", "d"]
    assert state == {"cursor:code": "d"}
    table, _ = extract(tmp_path, state={"cursor:code": "x' OR '1'='1"}, **raw)
    assert table.num_rows == 0  # the value is a literal, never SQL


def test_the_query_runs_read_only(pg_dsn: str, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="read-only transaction"):
        extract(tmp_path, dsn=pg_dsn, query="CREATE TABLE x (a int)")


def test_sql_errors_are_permanent_and_a_closed_port_transient(pg_dsn: str, tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        extract(tmp_path, dsn=pg_dsn, query="SELECT * FROM nope")
    with pytest.raises(PermanentError, match="cursor_column 'x' is not a column"):
        extract(tmp_path, dsn=pg_dsn, query="SELECT 1 AS a", cursor_column="x")
    with pytest.raises(TransientError, match="connecting to PostgreSQL"):
        extract(tmp_path, dsn="postgresql://postgres@127.0.0.1:1/db", query="SELECT 1")


def test_a_password_given_apart_joins_the_dsn(pg_dsn: str, tmp_path: Path) -> None:
    # The server trusts local connections: the password is accepted and ignored.
    table, _ = extract(tmp_path, dsn=pg_dsn, password="p@ss'word", query="SELECT 1 AS one")
    assert table.to_pydict() == {"one": [1]}


def test_the_dsn_may_come_from_the_environment(pg_dsn: str, tmp_path: Path) -> None:
    parsed = validate_config(
        PostgresExtractorConfig,
        {"dsn_env": "SHOP_DSN", "query": "SELECT 2 AS two"},
        tmp_path,
        environ={"SHOP_DSN": pg_dsn},
    )
    assert isinstance(parsed, PostgresExtractorConfig)
    batches = list(PostgresExtractor(parsed, context(tmp_path)).extract())
    assert batches[0].to_pydict() == {"two": [2]}


# --- loader -------------------------------------------------------------------------------


def test_append_creates_the_table_and_twice_with_one_run_is_once(
    pg_dsn: str, tmp_path: Path
) -> None:
    run_id = uuid.uuid4()
    assert load(pg_dsn, tmp_path, run_id, BATCH, BATCH) == 6
    assert load(pg_dsn, tmp_path, run_id, BATCH, BATCH) == 6
    assert sql(pg_dsn, "SELECT count(*), min(_orc_run_id::text) FROM people") == [(6, str(run_id))]
    columns = sql(
        pg_dsn,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'people' ORDER BY ordinal_position",
    )
    assert columns == [("id", "bigint"), ("name", "text"), ("_orc_run_id", "uuid")]
    assert sql(pg_dsn, "SELECT rows FROM _orc_loads") == [(6,)]
    load(pg_dsn, tmp_path, uuid.uuid4(), BATCH)
    assert sql(pg_dsn, "SELECT count(*) FROM people") == [(9,)]


def test_types_round_trip_and_cast_into_an_existing_table(pg_dsn: str, tmp_path: Path) -> None:
    sql(
        pg_dsn,
        "CREATE TABLE people (id integer, name varchar(10), amount numeric(8, 2), "
        "doc jsonb, at timestamptz, day date, ok boolean, ref uuid)",
    )
    batch = pa.record_batch(
        {
            "id": pa.array([1, 2], pa.int64()),
            "name": pa.array(["a", "b"]).dictionary_encode(),
            "amount": pa.array([decimal.Decimal("1.25"), None], pa.decimal128(8, 2)),
            "doc": ['{"k": 1}', "[]"],
            "at": pa.array([dt.datetime(2024, 1, 1, 12), None], pa.timestamp("ns", tz="UTC")),
            "day": pa.array([dt.date(2024, 1, 2), None]),
            "ok": [True, False],
            "ref": [str(uuid.UUID(int=1)), str(uuid.UUID(int=2))],
        }
    )
    run_id = uuid.uuid4()
    assert load(pg_dsn, tmp_path, run_id, batch) == 2
    assert sql(pg_dsn, "SELECT DISTINCT _orc_run_id::text FROM people") == [(str(run_id),)]
    rows = sql(
        pg_dsn,
        "SELECT id, name, amount::text, doc->>'k', at = timestamptz '2024-01-01 12:00Z', "
        "day, ok, ref::text FROM people ORDER BY id",
    )
    assert rows[0] == (1, "a", "1.25", "1", True, dt.date(2024, 1, 2), True, str(uuid.UUID(int=1)))


@pytest.mark.parametrize(
    "run_column",
    [
        "_orc_run_id text",
        "_orc_run_id varchar(36)",
        "_orc_run_id uuid",  # COPY cannot fill it from text: moved through a temporary table
        # as an earlier version made it: the run from a setting, per row
        "_orc_run_id text DEFAULT current_setting('orc.run_id', true)",
    ],
)
def test_a_run_column_made_elsewhere_gets_each_run(
    pg_dsn: str, tmp_path: Path, run_column: str
) -> None:
    sql(pg_dsn, f"CREATE TABLE people (id bigint, name text, {run_column})")
    run_id = uuid.uuid4()
    load(pg_dsn, tmp_path, run_id, BATCH)
    load(pg_dsn, tmp_path, uuid.uuid4(), BATCH)
    assert sql(pg_dsn, "SELECT count(DISTINCT _orc_run_id), count(_orc_run_id) FROM people") == [
        (2, 6)
    ]
    sql(pg_dsn, "INSERT INTO people (id) VALUES (99)")  # outside a load: no run
    assert sql(pg_dsn, "SELECT _orc_run_id FROM people WHERE id = 99") == [(None,)]


def test_a_value_that_does_not_fit_the_column_is_permanent(pg_dsn: str, tmp_path: Path) -> None:
    sql(pg_dsn, "CREATE TABLE people (id smallint)")
    with pytest.raises(PermanentError, match="column 'id'"):
        load(pg_dsn, tmp_path, uuid.uuid4(), pa.record_batch({"id": [1, 100000]}))
    with pytest.raises(PermanentError, match="column 'id'"):
        load(pg_dsn, tmp_path, uuid.uuid4(), pa.record_batch({"id": ["x"]}))
    assert sql(pg_dsn, "SELECT count(*) FROM people") == [(0,)]


def test_replace_empties_the_table_and_keeps_dependent_views(pg_dsn: str, tmp_path: Path) -> None:
    load(pg_dsn, tmp_path, uuid.uuid4(), BATCH)
    sql(pg_dsn, "CREATE VIEW people_names AS SELECT name FROM people")
    run_id = uuid.uuid4()
    for _ in range(2):
        load(pg_dsn, tmp_path, run_id, pa.record_batch({"id": [9], "name": ["z"]}), mode="replace")
    assert sql(pg_dsn, "SELECT name FROM people_names") == [("z",)]


def test_merge_upserts_and_the_last_duplicate_wins(pg_dsn: str, tmp_path: Path) -> None:
    load(pg_dsn, tmp_path, uuid.uuid4(), BATCH, mode="merge", key_columns=["id"])
    update = pa.record_batch({"id": [2, 4, 4], "name": ["B", "d", "D"]})
    run_id = uuid.uuid4()
    assert load(pg_dsn, tmp_path, run_id, update, mode="merge", key_columns=["id"]) == 3
    assert load(pg_dsn, tmp_path, run_id, update, mode="merge", key_columns=["id"]) == 3
    assert sql(pg_dsn, "SELECT id, name FROM people ORDER BY id") == [
        (1, "a"),
        (2, "B"),
        (3, "c"),
        (4, "D"),
    ]


def test_merge_with_a_null_key_rolls_back(pg_dsn: str, tmp_path: Path) -> None:
    load(pg_dsn, tmp_path, uuid.uuid4(), BATCH)
    bad = pa.record_batch({"id": pa.array([None], pa.int64()), "name": ["x"]})
    with pytest.raises(PermanentError, match="merge key column 'id' is null"):
        load(pg_dsn, tmp_path, uuid.uuid4(), bad, mode="merge", key_columns=["id"])
    assert sql(pg_dsn, "SELECT count(*) FROM people") == [(3,)]


def test_schema_evolution_adds_columns_and_strict_names_them(pg_dsn: str, tmp_path: Path) -> None:
    load(pg_dsn, tmp_path, uuid.uuid4(), BATCH)
    wider = pa.record_batch({"id": [4], "name": ["d"], "age": [40]})
    with pytest.raises(PermanentError, match=r"no column 'age' and schema_policy is strict"):
        load(pg_dsn, tmp_path, uuid.uuid4(), wider, schema_policy="strict")
    load(pg_dsn, tmp_path, uuid.uuid4(), wider)
    load(pg_dsn, tmp_path, uuid.uuid4(), pa.record_batch({"id": [5]}))
    assert sql(pg_dsn, "SELECT id, name, age FROM people ORDER BY id") == [
        (1, "a", None),
        (2, "b", None),
        (3, "c", None),
        (4, "d", 40),
        (5, None, None),
    ]


def test_a_failure_midway_leaves_nothing_and_keeps_its_type(pg_dsn: str, tmp_path: Path) -> None:
    def flaky() -> Iterator[pa.RecordBatch]:
        yield BATCH
        raise TransientError("staging went away")

    raw = {"dsn": pg_dsn, "table": "app.people"}
    loader = PostgresLoader(config(PostgresLoaderConfig, tmp_path, **raw), context(tmp_path))
    with pytest.raises(TransientError, match="staging went away"):
        loader.load(BATCH.schema, flaky())
    # Even the schema and table were rolled back with the rest.
    assert sql(pg_dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'app'") == [(0,)]


def test_readers_see_all_of_a_load_or_none(pg_dsn: str, tmp_path: Path) -> None:
    load(pg_dsn, tmp_path, uuid.uuid4(), BATCH)
    release = threading.Event()
    halfway = threading.Event()

    def slow() -> Iterator[pa.RecordBatch]:
        yield BATCH
        halfway.set()
        release.wait(10)
        yield BATCH

    loader = PostgresLoader(
        config(PostgresLoaderConfig, tmp_path, dsn=pg_dsn, table="people"), context(tmp_path)
    )
    worker = threading.Thread(target=loader.load, args=(BATCH.schema, slow()))
    worker.start()
    try:
        assert halfway.wait(10)
        assert sql(pg_dsn, "SELECT count(*) FROM people") == [(3,)]
    finally:
        release.set()
        worker.join(10)
    assert sql(pg_dsn, "SELECT count(*) FROM people") == [(9,)]


def test_concurrent_loads_of_one_run_load_once(pg_dsn: str, tmp_path: Path) -> None:
    load(pg_dsn, tmp_path, uuid.uuid4(), BATCH)  # the table and _orc_loads exist
    run_id = uuid.uuid4()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            load(pg_dsn, tmp_path, run_id, BATCH, BATCH)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    loaded = "SELECT count(*) FROM people WHERE _orc_run_id = CAST($1 AS uuid)"
    assert sql(pg_dsn, loaded, (str(run_id),)) == [(6,)]


def test_unsupported_and_reserved_columns_are_permanent(pg_dsn: str, tmp_path: Path) -> None:
    nested = pa.record_batch({"id": [1], "tags": pa.array([["a"]])})
    with pytest.raises(PermanentError, match="column 'tags' has Arrow type list"):
        load(pg_dsn, tmp_path, uuid.uuid4(), nested)
    with pytest.raises(PermanentError, match="reserved"):
        load(pg_dsn, tmp_path, uuid.uuid4(), pa.record_batch({"_orc_x": [1]}))


@pytest.mark.parametrize(
    "raw",
    [
        {"table": 'people"; DROP TABLE x; --'},
        {"table": "a.b.c"},
        {"table": "t", "mode": "merge"},
        {"table": "t", "mode": "upsert"},
        {"table": "t", "dsn": None},
    ],
)
def test_bad_loader_configs_are_rejected(tmp_path: Path, raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_config(PostgresLoaderConfig, {"dsn": "postgresql://h/db", **raw}, tmp_path)
