"""The Celery latency baseline: `celery_chain`'s app and `noop` task, and a last task that
pushes onto a Redis list, so the driver waits with `BLPOP` (woken at once) instead of
polling a counter, which would add up to a polling interval to every measurement.

The worker is started with `celery -A celery_latency worker` (from `bench/`).
"""

from __future__ import annotations

import redis
from celery_chain import REDIS_URL, app, noop

_redis = redis.Redis.from_url(REDIS_URL)


@app.task
def done_push(key: str) -> None:
    """The chain's second task: tell the driver it is done."""
    _redis.rpush(key, 1)


__all__ = ["app", "done_push", "noop"]
