"""Runs one task attempt's plugin, synchronously, in a worker thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from common.errors import OrcError, PermanentError, TransientError
from common.events import StagedData, TaskDispatched, utcnow
from common.ids import new_id
from common.settings import Settings
from common.staging import StagingArea
from common.states import TaskType
from plugins.base import PluginConfig, TaskContext, validate_config, worker_environ
from plugins.registry import get_extractor, get_loader
from plugins.secrets import is_sealed, redact, secret_key, secret_values, unseal_config


@dataclass(frozen=True)
class ExecutionOptions:
    """What the worker's settings tell the plugins."""

    http_allowlist: tuple[str, ...] = ()
    secret_key: str | None = None
    """Opens the `{"$secret": ...}` values of a dispatched config. None: looked up from the
    `ORC_*` environment (`plugins.secrets.secret_key`) when a config holds one."""

    @classmethod
    def from_settings(cls, settings: Settings) -> ExecutionOptions:
        return cls(http_allowlist=_allowlist(settings), secret_key=secret_key(settings))


def _allowlist(settings: Settings) -> tuple[str, ...]:
    return tuple(part.strip() for part in settings.http_allowlist.split(",") if part.strip())


def _options_from_environment() -> ExecutionOptions:
    # Read per task (a few microseconds): a changed environment is seen at once.
    return ExecutionOptions(http_allowlist=_allowlist(Settings()))


def _key_for(raw: dict[str, Any], key: str | None) -> str | None:
    # Reading (or making) the key file for a config with nothing sealed would be a side
    # effect with no use.
    if key is None and any(is_sealed(value) for value in raw.values()):
        return secret_key(Settings())
    return key


@dataclass(frozen=True)
class TaskResult:
    """What a successful attempt produced."""

    rows: int
    staged: StagedData | None = None
    state_update: dict[str, Any] | None = None
    """Keys for the job's state (`TaskSucceeded.state_update`); None when nothing changed."""


def _config(
    model: type[PluginConfig], raw: dict[str, Any], data_root: Path, key: str | None
) -> PluginConfig:
    try:
        return validate_config(model, unseal_config(raw, key), data_root, environ=worker_environ())
    except ValidationError as exc:
        # The API validated it at creation; failing now means the data root, the worker's
        # environment or the plugin changed since. A retry cannot fix that. The values
        # themselves are left out: they may be secrets.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise PermanentError(f"invalid plugin config: {problems}") from None


def execute_task(
    task: TaskDispatched,
    staging: StagingArea,
    data_root: Path,
    report_progress: Callable[[int], None],
    options: ExecutionOptions | None = None,
) -> TaskResult:
    """Run the task's plugin. Raises `PermanentError` for what no retry can fix; any other
    exception may be retried. Secret config values never appear in the error text.

    `options` default to the ones `ORC_*` environment variables give.
    """
    options = options if options is not None else _options_from_environment()
    context = TaskContext(
        job_definition_id=task.job_definition_id,
        run_id=task.run_id,
        task_id=task.task_id,
        attempt=task.attempt,
        data_root=data_root,
        report_progress=report_progress,
        state=MappingProxyType(dict(task.state)),
        http_allowlist=options.http_allowlist,
    )
    secrets: list[str] = []
    try:
        return _run(task, staging, context, options.secret_key, secrets)
    except Exception as exc:
        if _leaks(exc, secrets):
            raise _scrubbed(exc, secrets) from None
        raise


def _run(
    task: TaskDispatched,
    staging: StagingArea,
    context: TaskContext,
    key: str | None,
    secrets: list[str],
) -> TaskResult:
    """The attempt itself; `secrets` receives the config's secret values once known."""
    if task.task_type is TaskType.EXTRACT:
        extractor_cls = get_extractor(task.plugin)
        config = _config(extractor_cls.config_model, task.config, context.data_root, key)
        secrets.extend(secret_values(config))
        batches = extractor_cls(config, context).extract()
        staged = staging.write(
            task.run_id, task.task_id, batches, execution=f"{task.attempt}-{new_id().hex[:12]}"
        )
        return TaskResult(staged.rows, staged, context.state_update or None)
    if task.staged is None:
        raise PermanentError("LOAD task dispatched without staged input")
    loader_cls = get_loader(task.plugin)
    config = _config(loader_cls.config_model, task.config, context.data_root, key)
    secrets.extend(secret_values(config))
    schema, batches = staging.read(task.staged)
    rows = loader_cls(config, context).load(schema, batches)
    return TaskResult(rows, None, context.state_update or None)


@dataclass
class LoadAfter:
    """How far an `extract_then_load` hop got: written by its thread as it goes, read by
    the event loop (also mid-way, to tell which phase overran its timeout)."""

    extracted: TaskResult | None = None
    load: TaskDispatched | None = None
    """The load's dispatch, once it starts."""
    load_began: float | None = None
    """`time.monotonic()` at the load's start."""
    load_started_at: datetime | None = None
    load_ended: float | None = None
    loaded: TaskResult | None = None
    load_error: Exception | None = None


def extract_then_load(
    task: TaskDispatched,
    staging: StagingArea,
    data_root: Path,
    report_extract: Callable[[int], None],
    report_load: Callable[[int], None],
    may_load: Callable[[], bool],
    ran: LoadAfter,
    options: ExecutionOptions | None = None,
) -> None:
    """The extract, then at once the load that rode in its dispatch (`TaskDispatched.then`)
    if its result is inline and `may_load()` still says so: one hop to a thread for both,
    where two cost a third of a small run's CPU in the worker. The extract's error is
    raised; the load's is kept in `ran.load_error`, beside the extract's result."""
    ran.extracted = execute_task(task, staging, data_root, report_extract, options)
    staged = ran.extracted.staged
    if staged is None or staged.inline is None or not may_load():
        return
    ran.load = task.load_order(staged)
    ran.load_started_at = utcnow()
    ran.load_began = time.monotonic()
    try:
        ran.loaded = execute_task(ran.load, staging, data_root, report_load, options)
    except Exception as exc:
        ran.load_error = exc
    finally:
        ran.load_ended = time.monotonic()


def _leaks(exc: BaseException, secrets: list[str]) -> bool:
    return bool(secrets) and redact(str(exc), secrets) != str(exc)


def _scrubbed(exc: Exception, secrets: list[str]) -> OrcError:
    """An error of `exc`'s retry class whose text has the secrets masked."""
    text = f"{type(exc).__name__}: {redact(str(exc), secrets)}"
    return PermanentError(text) if isinstance(exc, PermanentError) else TransientError(text)
