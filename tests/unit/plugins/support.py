"""Helpers for plugin tests: a task context, a plugin built from a raw config."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pyarrow as pa

from plugins.base import Extractor, PluginConfig, TaskContext, validate_config


def context(
    root: Path,
    run_id: uuid.UUID | None = None,
    state: Mapping[str, Any] | None = None,
    allowlist: Iterable[str] = (),
    progress: list[int] | None = None,
) -> TaskContext:
    return TaskContext(
        job_definition_id=uuid.uuid4(),
        run_id=run_id or uuid.uuid4(),
        task_id=uuid.uuid4(),
        attempt=1,
        data_root=root,
        report_progress=progress.append if progress is not None else (lambda rows: None),
        state=MappingProxyType(dict(state or {})),
        http_allowlist=tuple(allowlist),
    )


def config(model: type[PluginConfig], root: Path, **raw: Any) -> Any:
    return validate_config(model, raw, root, environ={})


def extract_table(extractor: Extractor[Any]) -> pa.Table:
    batches = list(extractor.extract())
    if not batches:
        return pa.table({})
    return pa.Table.from_batches(batches)
