"""Staging on S3 (moto's server on 127.0.0.1) through pyarrow.fs: write, read, clean up."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pyarrow as pa
import pytest

from common.errors import PermanentError
from common.staging import StagingArea
from tests.integration.plugins.conftest import S3

BATCH = pa.record_batch({"id": [1, 2, 3], "name": ["a", "b", "c"]})


def test_stage_and_read_back_several_parts(s3: S3) -> None:
    area = StagingArea(s3.url("staging"), rows_per_file=2)
    run_id, task_id = uuid.uuid4(), uuid.uuid4()
    staged = area.write(run_id, task_id, [BATCH, BATCH])
    assert staged.rows == 6
    assert len(staged.files) == 2  # a part ends at the first batch boundary past 2 rows
    # Credentials in ORC_STAGING_URL never reach the URIs that events carry.
    assert staged.uri == f"s3://{s3.bucket}/staging/{run_id}/{task_id}"
    assert all(file.startswith(f"s3://{s3.bucket}/staging/{run_id}/") for file in staged.files)
    # A second process (another StagingArea on the same URL) reads what the first wrote.
    schema, batches = StagingArea(s3.url("staging")).read(staged)
    table = pa.Table.from_batches(list(batches), schema=schema)
    assert table.column("id").to_pylist() == [1, 2, 3, 1, 2, 3]


def test_restaging_a_task_replaces_its_files(s3: S3) -> None:
    area = StagingArea(s3.url("staging"))
    run_id, task_id = uuid.uuid4(), uuid.uuid4()
    area.write(run_id, task_id, [BATCH, BATCH])
    staged = area.write(run_id, task_id, [BATCH])
    _, batches = area.read(staged)
    assert sum(batch.num_rows for batch in batches) == 3


def test_remove_and_retention_cleanup(s3: S3) -> None:
    area = StagingArea(s3.url("staging"))
    done, running = uuid.uuid4(), uuid.uuid4()
    area.write(done, uuid.uuid4(), [BATCH])
    area.write(running, uuid.uuid4(), [BATCH])
    assert area.remove_older_than(timedelta(hours=1)) == []
    removed = area.remove_older_than(timedelta(0), keep={running})
    assert removed == [done]
    staged = area.write(done, uuid.uuid4(), [BATCH])
    area.remove(done)
    with pytest.raises(PermanentError, match="gone"):
        area.read(staged)


def test_a_uri_outside_the_staging_area_is_refused(s3: S3) -> None:
    area = StagingArea(s3.url("staging"))
    staged = area.write(uuid.uuid4(), uuid.uuid4(), [BATCH])
    forged = staged.model_copy(update={"files": (f"s3://{s3.bucket}/elsewhere/x.parquet",)})
    with pytest.raises(PermanentError, match="not in the staging area"):
        area.read(forged)
