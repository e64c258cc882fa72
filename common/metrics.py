"""The engine's Prometheus metrics, in one registry, named by Prometheus conventions.

Every component exposes them at `/metrics` on `ORC_METRICS_PORT` (the API also on its own
port). Labels are bounded: job ids, task types, plugin names, outcomes, statuses.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

RUNS_STARTED = Counter(
    "orc_runs_started_total",
    "Runs recorded by the coordinator.",
    ["job_id"],
    registry=REGISTRY,
)
RUNS_FINISHED = Counter(
    "orc_runs_finished_total",
    "Runs that reached a final status.",
    ["job_id", "status"],
    registry=REGISTRY,
)
TASK_ATTEMPTS = Counter(
    "orc_task_attempts_total",
    "Task attempts run by workers, by outcome (succeeded, failed, timed_out, interrupted).",
    ["task_type", "plugin", "outcome"],
    registry=REGISTRY,
)
TASK_DURATION = Histogram(
    "orc_task_duration_seconds",
    "Wall time of a task attempt in a worker.",
    ["task_type", "plugin"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
ROWS = Counter(
    "orc_rows_total",
    "Rows moved by successful attempts.",
    ["task_type", "plugin"],
    registry=REGISTRY,
)
BYTES_STAGED = Counter(
    "orc_staged_bytes_total",
    "Bytes of Parquet written to staging by extracts.",
    ["plugin"],
    registry=REGISTRY,
)
RETRIES_SCHEDULED = Counter(
    "orc_retries_scheduled_total",
    "Attempts sent to a delay queue for a retry.",
    ["task_type", "delay_seconds"],
    registry=REGISTRY,
)
DEAD_LETTERED = Counter(
    "orc_dead_lettered_total",
    "Messages set aside on the dead-letter queue by the engine.",
    ["routing_key"],
    registry=REGISTRY,
)
TICK_LAG = Histogram(
    "orc_scheduler_tick_lag_seconds",
    "From a job's scheduled tick to its JobDue being published.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30),
    registry=REGISTRY,
)
HEARTBEATS = Counter(
    "orc_worker_heartbeats_total",
    "Worker heartbeats received by the coordinator.",
    registry=REGISTRY,
)
WORKERS_LOST = Counter(
    "orc_workers_lost_total",
    "Workers marked LOST after missing their heartbeats.",
    registry=REGISTRY,
)
QUEUE_MESSAGES = Gauge(
    "orc_queue_messages",
    "Messages ready in a queue (consumer lag), sampled by the coordinator.",
    ["queue"],
    registry=REGISTRY,
)
