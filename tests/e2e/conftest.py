"""Fixtures of the end-to-end tests: an engine's settings with its API on a free port."""

from __future__ import annotations

import pytest

from common.settings import Settings
from tests.integration.api.conftest import free_port, with_admin_token


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    """The engine's settings (both stores) with a free API port and `ORC_ADMIN_TOKEN` set."""
    return with_admin_token(settings).model_copy(update={"api_port": free_port()})


@pytest.fixture
def sqlite_api_settings(sqlite_settings: Settings) -> Settings:
    """The same on SQLite only."""
    return with_admin_token(sqlite_settings).model_copy(update={"api_port": free_port()})
