"""Logging for every component: readable text by default, JSON with `ORC_LOG_FORMAT=json`.

Lines about a run or task carry `job`, `run_id`, `task_id` and `attempt`, taken from a
context the coordinator and workers set while they handle an event (`log_context`).
Configs, and so secrets, are never logged.
"""

from __future__ import annotations

import contextvars
import json
import logging
from typing import Any

_CONTEXT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "orc_log", default=None
)
FIELDS = ("job", "run_id", "task_id", "attempt")


class log_context:
    """Attach run/task fields to every log line written inside the block.

    The coordinator and the workers enter one per message, and most messages log
    nothing: the values are kept as given and made text only when a line is written.
    """

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        fields = {k: v for k, v in self._fields.items() if v is not None}
        self._token = _CONTEXT.set({**(_CONTEXT.get() or {}), **fields})

    def __exit__(self, *exc: object) -> None:
        _CONTEXT.reset(self._token)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        context = _CONTEXT.get() or {}
        for name in FIELDS:
            value = context.get(name)
            setattr(record, name, "" if value is None else str(value))
        record.orc_context = " ".join(f"{k}={v}" for k, v in context.items())
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, "")
            if value:
                line[name] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s %(orc_context)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aio_pika", "aiormq", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
