"""`/plugins`: the extractors and loaders installed, with the schema of their configs."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get

from api.auth import SECURITY, allow
from api.credentials import Role
from api.errors import error_responses
from api.schemas import PluginCatalog, PluginOut
from plugins.registry import extractors, loaders


def _describe(kind: str, found: dict[str, Any]) -> list[PluginOut]:
    return [
        PluginOut(name=name, kind=kind, config_schema=cls.config_model.model_json_schema())
        for name, cls in sorted(found.items())
    ]


class PluginController(Controller):
    path = "/plugins"
    tags = ["plugins"]
    security = SECURITY
    guards = allow(Role.VIEWER)

    @get("/", summary="List the installed plugins", responses=error_responses())
    async def list_plugins(self) -> PluginCatalog:
        """Every extractor and loader a job may name, each with the JSON schema its
        `extractor_config` or `loader_config` must match."""
        return PluginCatalog(
            extractors=_describe("extractor", extractors()),
            loaders=_describe("loader", loaders()),
        )
