"""The Celery baseline: a chain of two no-op tasks with `acks_late`, on the same RabbitMQ.

The second task counts itself done in Redis, so the driver sees completion without a
result backend (which Celery users often turn off, and which would only slow it down).
"""

from __future__ import annotations

import os

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
COUNTER = os.environ.get("BENCH_COUNTER", "bench:celery:done")

app = Celery("bench", broker=BROKER)
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=100,
    broker_connection_retry_on_startup=True,
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "bench-celery"),
)
_redis = redis.Redis.from_url(REDIS_URL)


@app.task
def noop() -> None:
    return None


@app.task
def done() -> None:
    _redis.incr(COUNTER)
