"""The plugin interface: an extractor yields Arrow record batches, a loader consumes them.

Both run synchronously in a worker thread (Arrow and DuckDB work is CPU-bound and must not
starve the event loop). Each plugin declares a pydantic config model; the API validates a
job's config against it when the job is created, with `ORC_DATA_ROOT` in the validation
context so path fields can be checked (`plugins.paths.DataPath`).
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict


class PluginConfig(BaseModel):
    """Base of every plugin config: unknown keys are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


C = TypeVar("C", bound=PluginConfig)


def _ignore_progress(rows: int) -> None:
    return None


@dataclass(frozen=True)
class TaskContext:
    """What a plugin may know about the task it runs in."""

    job_definition_id: uuid.UUID
    run_id: uuid.UUID
    task_id: uuid.UUID
    attempt: int
    data_root: Path
    report_progress: Callable[[int], None] = field(default=_ignore_progress)
    """Call with the rows handled so far; cheap, may be called per batch."""


class Extractor(ABC, Generic[C]):
    """Reads a source and yields Arrow record batches of bounded size."""

    config_model: ClassVar[type[PluginConfig]]

    def __init__(self, config: C, context: TaskContext) -> None:
        self.config = config
        self.context = context

    @abstractmethod
    def extract(self) -> Iterator[pa.RecordBatch]:
        """Yield batches; raise `common.errors.PermanentError` for what a retry cannot fix."""


class Loader(ABC, Generic[C]):
    """Writes record batches into a destination, idempotently per run.

    The same LOAD task run twice (a redelivery after a crash) must leave the destination
    as if it ran once; `context.run_id` is the key to make that so.
    """

    config_model: ClassVar[type[PluginConfig]]

    def __init__(self, config: C, context: TaskContext) -> None:
        self.config = config
        self.context = context

    @abstractmethod
    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        """Write every batch; return the number of rows written."""


def validate_config(
    model: type[PluginConfig], raw: dict[str, Any], data_root: Path
) -> PluginConfig:
    """Validate a raw config; path fields are checked against `data_root`."""
    return model.model_validate(raw, context={"data_root": data_root})
