"""Garbage-collector settings for the engine's long-running processes.

An engine process imports SQLAlchemy, pydantic, Litestar and aio-pika: about 150,000
objects that live as long as it does. CPython's collector, left at its defaults (a
young collection every 700 net allocations), scanned that whole heap in a full
collection every few hundred runs and ran a young one every few: 10 % of the
coordinator's CPU (0.96 s of 9.5 s over 3,200 runs in `bench/components.py`; 0.07 s
with these settings). Freezing what start-up made takes it out of every collection;
a higher first threshold makes the young collections rare, each still over a small
generation (the cyclic garbage it lets pile up is a few thousand small objects).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000
"""Net allocations of tracked objects between young collections (CPython: 700)."""


def tune_collector() -> None:
    """Freeze what exists now (after a collection, so no garbage is kept for good) and
    raise the young generation's threshold. Call once, when the process has started."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
