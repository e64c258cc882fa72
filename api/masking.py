"""Secret fields of plugin configs never leave the API in clear.

Every job answer goes through `job_out`, the one place configs are masked: a plugin's
secret fields (typed `SecretStr`: passwords, keys) read `***` (`plugins.secrets`). A
client that reads a job, edits it and sends it back (`PUT`, `PATCH`) sends `***` where a
secret was: `keep_secrets` puts the stored value back there, so a round trip never
overwrites a secret with the mask. The config of a plugin that is no longer installed is
shown with every value masked: which of its fields are secret is unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.schemas import JobOut
from common.db.models import JobDefinition
from common.errors import PluginNotFound
from plugins.base import PluginConfig
from plugins.registry import get_extractor, get_loader
from plugins.secrets import MASK, mask_config, unmask_config


def _model(lookup: Callable[[str], Any], name: str) -> type[PluginConfig] | None:
    try:
        model: type[PluginConfig] = lookup(name).config_model
    except PluginNotFound:
        return None
    return model


def _mask_all(raw: dict[str, Any]) -> dict[str, Any]:
    return {key: MASK for key in raw}


def _masked(lookup: Callable[[str], Any], name: str, raw: dict[str, Any]) -> dict[str, Any]:
    model = _model(lookup, name)
    # A plugin no longer installed: which fields are secret is unknown, so none is shown.
    return _mask_all(raw) if model is None else mask_config(model, raw)


def job_out(job: JobDefinition) -> JobOut:
    """The answer for a stored job, its configs masked."""
    out = JobOut.model_validate(job)
    return out.model_copy(
        update={
            "extractor_config": _masked(get_extractor, job.extractor_type, job.extractor_config),
            "loader_config": _masked(get_loader, job.loader_type, job.loader_config),
        }
    )


def keep_secrets(
    kind: str, name: str, incoming: dict[str, Any], stored_name: str, stored: dict[str, Any]
) -> dict[str, Any]:
    """The config to store when a client sends `incoming` for a job that had `stored`.

    Only for the same plugin: a config for another plugin shares no secrets with the old.
    """
    if name != stored_name:
        return incoming
    model = _model(get_extractor if kind == "extractor" else get_loader, name)
    return incoming if model is None else unmask_config(model, incoming, stored)
