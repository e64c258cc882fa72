"""Plugins for testing pipelines and measuring the engine itself: `generate` makes
synthetic rows, `null` discards what it is given."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
from pydantic import Field

from plugins.base import Extractor, Loader, PluginConfig

SCHEMA = pa.schema([("id", pa.int64()), ("value", pa.float64()), ("label", pa.string())])


class GenerateConfig(PluginConfig):
    rows: int = Field(default=10, ge=0, le=1_000_000_000, description="Rows to make.")
    batch_rows: int = Field(default=65_536, ge=1, description="Rows per record batch.")


class GenerateExtractor(Extractor[GenerateConfig]):
    """Yields `rows` rows of (`id` int64, `value` float64, `label` string)."""

    config_model = GenerateConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        done = 0
        while done < self.config.rows:
            ids = range(done, min(done + self.config.batch_rows, self.config.rows))
            # Plain lists rather than compute kernels: the labels are built in Python
            # anyway, and for the small batches of engine benchmarks a kernel's dispatch
            # costs more than the rows.
            yield pa.record_batch(
                [
                    pa.array(ids, pa.int64()),
                    pa.array([i * 0.5 for i in ids], pa.float64()),
                    pa.array([f"row-{i}" for i in ids], pa.string()),
                ],
                schema=SCHEMA,
            )
            done = ids.stop
            self.context.report_progress(done)


class NullConfig(PluginConfig):
    pass


class NullLoader(Loader[NullConfig]):
    """Reads every batch and keeps nothing: idempotent by construction."""

    config_model = NullConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        rows = 0
        for batch in batches:
            rows += batch.num_rows
            self.context.report_progress(rows)
        return rows
