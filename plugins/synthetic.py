"""Plugins for testing pipelines and measuring the engine itself: `generate` makes
synthetic rows, `null` discards what it is given."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from plugins.base import Extractor, Loader, PluginConfig


class GenerateConfig(PluginConfig):
    rows: int = Field(default=10, ge=0, le=1_000_000_000, description="Rows to make.")
    batch_rows: int = Field(default=65_536, ge=1, description="Rows per record batch.")


class GenerateExtractor(Extractor[GenerateConfig]):
    """Yields `rows` rows of (`id` int64, `value` float64, `label` string)."""

    config_model = GenerateConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        done = 0
        while done < self.config.rows:
            n = min(self.config.batch_rows, self.config.rows - done)
            ids = pa.array(range(done, done + n), pa.int64())
            yield pa.record_batch(
                {
                    "id": ids,
                    "value": pc.multiply(ids.cast(pa.float64()), 0.5),
                    "label": pa.array([f"row-{i}" for i in range(done, done + n)]),
                }
            )
            done += n
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
