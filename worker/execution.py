"""Runs one task attempt's plugin, synchronously, in a worker thread."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from common.errors import PermanentError
from common.events import StagedData, TaskDispatched
from common.staging import StagingArea
from common.states import TaskType
from plugins.base import PluginConfig, TaskContext, validate_config
from plugins.registry import get_extractor, get_loader


def _config(model: type[PluginConfig], raw: dict[str, object], data_root: Path) -> PluginConfig:
    try:
        return validate_config(model, dict(raw), data_root)
    except ValidationError as exc:
        # The API validated it at creation; failing now means the data root or the plugin
        # changed since. A retry cannot fix that.
        raise PermanentError(f"invalid plugin config: {exc}") from exc


def run_task(
    task: TaskDispatched,
    staging: StagingArea,
    data_root: Path,
    report_progress: Callable[[int], None],
) -> tuple[int, StagedData | None]:
    """Returns (rows, staged output). Raises `PermanentError` for what no retry can fix."""
    context = TaskContext(
        job_definition_id=task.job_definition_id,
        run_id=task.run_id,
        task_id=task.task_id,
        attempt=task.attempt,
        data_root=data_root,
        report_progress=report_progress,
    )
    if task.task_type is TaskType.EXTRACT:
        extractor_cls = get_extractor(task.plugin)
        extractor = extractor_cls(
            _config(extractor_cls.config_model, task.config, data_root), context
        )
        staged = staging.write(task.run_id, task.task_id, extractor.extract())
        return staged.rows, staged
    if task.staged is None:
        raise PermanentError("LOAD task dispatched without staged input")
    loader_cls = get_loader(task.plugin)
    loader = loader_cls(_config(loader_cls.config_model, task.config, data_root), context)
    schema, batches = staging.read(task.staged)
    return loader.load(schema, batches), None
