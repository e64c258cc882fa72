"""Secrets in plugin configs never ride the bus in clear: the coordinator seals them for
the worker (`plugins.secrets`), keyed by `ORC_SECRET_KEY`."""

from __future__ import annotations

from typing import Any

from common.errors import PluginNotFound
from common.states import TaskType
from plugins.registry import get_extractor, get_loader
from plugins.secrets import seal_config
from scheduler.coordinator.uow import ConfigSealer


def config_sealer(key: str) -> ConfigSealer:
    def seal(task_type: TaskType, plugin: str, config: dict[str, Any]) -> dict[str, Any]:
        try:
            cls = get_extractor(plugin) if task_type is TaskType.EXTRACT else get_loader(plugin)
        except PluginNotFound:
            # The worker fails the task with the same error; nothing to seal for it.
            return config
        return seal_config(cls.config_model, config, key)

    return seal
