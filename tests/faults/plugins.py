"""Plugins that misbehave on request, for `orc` worker subprocesses.

In-process registrations are invisible to another process, so the suite makes these known
through entry points: `conftest.py` writes a `*.dist-info` with an `entry_points.txt` into
a folder on the workers' `PYTHONPATH`. They wrap the built-in CSV extractor and DuckDB
loader, so the data path is the real one; they only add pauses (to have a middle to crash
in) and failures. Every pause reports progress in small steps: that is where a worker
interrupts an attempt (timeout, shutdown).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import pyarrow as pa
from pydantic import Field

from common.errors import TransientError
from plugins.base import TaskContext
from plugins.csv_extractor import CsvConfig, CsvExtractor
from plugins.duckdb_loader import DuckDBConfig, DuckDBLoader

EXTRACTOR = "fault_csv"
LOADER = "fault_duckdb"
ENTRY_POINTS = {
    "orc.extractors": {EXTRACTOR: f"{__name__}:FaultCsvExtractor"},
    "orc.loaders": {LOADER: f"{__name__}:FaultDuckDBLoader"},
}
FAILURE_TEXT = "injected failure"
STEP_SECONDS = 0.05


def pause(seconds: float, context: TaskContext, rows: int) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        context.report_progress(rows)
        time.sleep(min(STEP_SECONDS, left))


class FaultCsvConfig(CsvConfig):
    pause_seconds: float = Field(default=0.0, ge=0, description="Pause after each batch.")
    fail: bool = Field(default=False, description="Every attempt fails, as a transient error.")


class FaultCsvExtractor(CsvExtractor):
    """The CSV extractor, pausing after each batch it read, or failing every attempt."""

    config_model = FaultCsvConfig
    config: FaultCsvConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        if self.config.fail:
            raise TransientError(f"{FAILURE_TEXT} (attempt {self.context.attempt})")
        rows = 0
        for batch in super().extract():
            rows += batch.num_rows
            yield batch
            pause(self.config.pause_seconds, self.context, rows)


class FaultDuckDBConfig(DuckDBConfig):
    pause_seconds: float = Field(
        default=0.0, ge=0, description="Pause after each batch, inside the load's transaction."
    )


class FaultDuckDBLoader(DuckDBLoader):
    """The DuckDB loader, pausing after each batch while its transaction is open."""

    config_model = FaultDuckDBConfig
    config: FaultDuckDBConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        return super().load(schema, self._slowly(batches))

    def _slowly(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = 0
        for batch in batches:
            rows += batch.num_rows
            yield batch
            pause(self.config.pause_seconds, self.context, rows)
