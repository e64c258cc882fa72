"""The event loop an `orc` process runs on (`ORC_EVENT_LOOP`).

uvloop's transports and scheduling are in C, and an engine process is mostly small AMQP
frames and callbacks: it took about a tenth off a worker's CPU per task and a few percent
off the coordinator's per run (`bench/components.py`, alternated with asyncio's loop).
It is optional: where it is not installed (Windows) `auto` falls back to asyncio's loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

T = TypeVar("T")
EventLoopChoice = Literal["auto", "uvloop", "asyncio"]


def run(main: Coroutine[Any, Any, T], choice: EventLoopChoice = "auto") -> T:
    """`asyncio.run(main)`, on uvloop unless `choice` says asyncio (or it is missing)."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                main.close()
                raise SystemExit(
                    "ORC_EVENT_LOOP=uvloop, but uvloop is not installed (pip install uvloop)"
                ) from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)
