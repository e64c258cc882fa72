"""Extractors that misbehave on purpose, registered in-process for failure tests.

Each reports progress often: that is where a worker interrupts a plugin (timeout,
cancellation, shutdown).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from common.errors import PermanentError
from plugins.base import Extractor, PluginConfig
from plugins.registry import register_extractor


class SleepyConfig(PluginConfig):
    seconds: float = 1.0
    rows: int = 10


class SleepyExtractor(Extractor[SleepyConfig]):
    """Sleeps in small steps, reporting progress, then yields a batch."""

    config_model = SleepyConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        deadline = time.monotonic() + self.config.seconds
        while time.monotonic() < deadline:
            self.context.report_progress(0)
            time.sleep(0.02)
        yield pa.record_batch({"id": list(range(self.config.rows))})


class FlakyConfig(PluginConfig):
    fail_times: int = 1
    counter: str = "flaky-counter"
    permanent: bool = False


class FlakyExtractor(Extractor[FlakyConfig]):
    """Fails its first `fail_times` attempts (counted in a file under the data root)."""

    config_model = FlakyConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        counter = Path(self.context.data_root) / self.config.counter
        seen = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(seen + 1))
        if seen < self.config.fail_times:
            if self.config.permanent:
                raise PermanentError(f"permanent failure #{seen + 1}")
            raise RuntimeError(f"transient failure #{seen + 1}")
        yield pa.record_batch({"id": [1, 2, 3]})


def register() -> None:
    register_extractor("sleepy", SleepyExtractor)
    register_extractor("flaky", FlakyExtractor)
