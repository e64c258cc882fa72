"""Checks of a job body that need more than its schema: the plugins and their configs.

A job is accepted only if a worker could run it: both plugin names are registered, and
each config validates against its plugin's `config_model` with `ORC_DATA_ROOT` in the
validation context, so a path outside the data root is refused now, not at 3 a.m.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from api.errors import InvalidInput
from api.schemas import FieldError, JobIn
from common.errors import PluginNotFound
from plugins.base import PluginConfig, validate_config
from plugins.registry import get_extractor, get_loader


def _config_errors(
    type_field: str,
    config_field: str,
    name: str,
    lookup: Callable[[str], Any],
    raw: dict[str, Any],
    data_root: Path,
) -> list[FieldError]:
    try:
        model: type[PluginConfig] = lookup(name).config_model
    except PluginNotFound as exc:
        return [FieldError(field=type_field, message=str(exc))]
    try:
        validate_config(model, raw, data_root)
    except ValidationError as exc:
        return [
            FieldError(
                field=".".join([config_field, *(str(part) for part in err["loc"])]),
                message=err["msg"],
            )
            for err in exc.errors(include_url=False)
        ]
    return []


def check_plugins(job: JobIn, data_root: Path) -> None:
    """Raise `InvalidInput` naming every plugin field at fault (both plugins are checked)."""
    errors = _config_errors(
        "extractor_type",
        "extractor_config",
        job.extractor_type,
        get_extractor,
        job.extractor_config,
        data_root,
    ) + _config_errors(
        "loader_type", "loader_config", job.loader_type, get_loader, job.loader_config, data_root
    )
    if errors:
        raise InvalidInput(errors, detail="Invalid plugin settings")
