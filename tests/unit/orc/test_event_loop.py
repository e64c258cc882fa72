"""`ORC_EVENT_LOOP`: which loop an `orc` process runs on."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from orc import event_loop


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_auto_and_uvloop_run_on_uvloop() -> None:
    assert event_loop.run(loop_type(), "auto") is uvloop.Loop
    assert event_loop.run(loop_type(), "uvloop") is uvloop.Loop


def test_asyncio_runs_on_the_standard_loop() -> None:
    assert not issubclass(event_loop.run(loop_type(), "asyncio"), uvloop.Loop)


def test_without_uvloop_auto_falls_back_and_uvloop_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what `import uvloop` sees uninstalled
    assert not issubclass(event_loop.run(loop_type(), "auto"), uvloop.Loop)
    with pytest.raises(SystemExit, match="uvloop is not installed"):
        event_loop.run(loop_type(), "uvloop")
