from __future__ import annotations

from collections.abc import Iterator

import pytest

from common.settings import Settings
from plugins.registry import clear_registrations
from tests.test_plugins import register


@pytest.fixture(autouse=True)
def misbehaving_plugins() -> Iterator[None]:
    register()
    yield
    clear_registrations()


@pytest.fixture
def fast_settings(sqlite_settings: Settings) -> Settings:
    """Heartbeats and relays quick enough for a test to watch them act."""
    return sqlite_settings.model_copy(
        update={
            "heartbeat_seconds": 0.5,
            "lost_after_heartbeats": 4,
            "outbox_relay_seconds": 1.0,
            "worker_grace_seconds": 5.0,
        }
    )
