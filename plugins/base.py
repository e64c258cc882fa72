"""The plugin interface: an extractor yields Arrow record batches, a loader consumes them.

Both run synchronously in a worker thread (Arrow and DuckDB work is CPU-bound and must not
starve the event loop). Each plugin declares a pydantic config model; the API validates a
job's config against it when the job is created, with `ORC_DATA_ROOT` in the validation
context so path fields can be checked (`plugins.paths.DataPath`).

Errors: raise `common.errors.PermanentError` for what a retry cannot fix (bad config, bad
data, a 4xx) and `common.errors.TransientError` for what it may (a lock, a timeout, a 5xx).
Anything else counts as transient.

Secrets: a config field typed `SecretStr` (or `dict[str, SecretStr]`) is never shown by the
API, logs or events (`plugins.secrets`). Instead of the value a config may name an
environment variable of the worker: `{"password_env": "PG_PASSWORD"}` for a `password`
field, `{"headers_env": {"X-Api-Key": "API_KEY"}}` for a mapping field. The variable is read
when the task runs; when the API validates the job only its name is checked.
"""

from __future__ import annotations

import functools
import json
import os
import re
import types
import typing
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Literal, TypeVar

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationInfo, model_validator

from common.errors import PermanentError

ENV_SUFFIX = "_env"
"""`<field>_env` names the environment variable that holds a secret field's value."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ENGINE_ENV_PREFIX = "ORC_"
MAX_STATE_KEY_LENGTH = 200

SecretKind = Literal["value", "mapping"]


def secret_kind(annotation: Any) -> SecretKind | None:
    """`value` for a `SecretStr` field, `mapping` for `dict[str, SecretStr]`, else None
    (`X | None` counts as `X`)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = {secret_kind(arg) for arg in typing.get_args(annotation)} - {None}
        return kinds.pop() if len(kinds) == 1 else None
    if annotation is SecretStr:
        return "value"
    if origin in (dict, Mapping, typing.Mapping):
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is SecretStr:
            return "mapping"
    return None


@functools.cache
def secret_fields(model: type[BaseModel]) -> Mapping[str, SecretKind]:
    """The model's secret fields (by their names in a raw config) and their kind."""
    # Cached: asked for on every dispatch and every attempt; a model's fields don't change.
    found: dict[str, SecretKind] = {}
    for name, info in model.model_fields.items():
        kind = secret_kind(info.annotation)
        if kind is not None:
            found[info.alias or name] = kind
    return MappingProxyType(found)


def _env_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise ValueError(f"{where} must name an environment variable (letters, digits, _)")
    if value.upper().startswith(_ENGINE_ENV_PREFIX):
        # The engine's own settings (its secret key, its database URL) are not for jobs.
        raise ValueError(f"{where}: variables named ORC_* are reserved for the engine")
    return value


def _read_env(name: str, where: str, environ: Mapping[str, str] | None) -> str:
    if environ is None:
        # Validation without the worker's environment (the API): only the name is checked.
        return f"${{{name}}}"
    if name not in environ:
        raise ValueError(f"{where}: environment variable {name} is not set on this worker")
    return environ[name]


def _resolve_env_references(
    model: type[BaseModel], raw: dict[str, Any], environ: Mapping[str, str] | None
) -> dict[str, Any]:
    secrets = secret_fields(model)
    resolved = dict(raw)
    for key in [k for k in raw if k.endswith(ENV_SUFFIX)]:
        name = key.removesuffix(ENV_SUFFIX)
        kind = secrets.get(name)
        if kind is None:
            continue  # not a reference: left for the model (an unknown key is an error)
        reference = resolved.pop(key)
        if kind == "value":
            if raw.get(name) is not None:
                raise ValueError(f"give either {name} or {key}, not both")
            resolved[name] = _read_env(_env_name(reference, key), key, environ)
            continue
        if not isinstance(reference, dict):
            # pydantic turns only ValueError into a validation error.
            raise ValueError(f"{key} must map each key to an environment variable's name")  # noqa: TRY004
        values = dict(resolved.get(name) or {})
        for item, var in reference.items():
            where = f"{key}.{item}"
            if item in values:
                raise ValueError(f"{name}.{item} is given both as a value and in {key}")
            values[item] = _read_env(_env_name(var, where), where, environ)
        resolved[name] = values
    return resolved


def _document_env_references(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Add the `<field>_env` keys to the JSON Schema; a secret may be given either way."""
    properties = schema.setdefault("properties", {})
    required: list[str] = schema.get("required", [])
    alternatives: list[dict[str, Any]] = []
    for name, kind in secret_fields(model).items():
        env_key = f"{name}{ENV_SUFFIX}"
        if kind == "value":
            properties[env_key] = {
                "type": "string",
                "title": env_key,
                "description": f"Name of the worker's environment variable holding `{name}`.",
            }
        else:
            properties[env_key] = {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "title": env_key,
                "description": f"Entries of `{name}` read from the worker's environment: "
                "key → variable name.",
            }
        if name in required:
            required.remove(name)
            alternatives.append({"anyOf": [{"required": [name]}, {"required": [env_key]}]})
    if alternatives:
        schema["allOf"] = [*schema.get("allOf", []), *alternatives]
    if "required" in schema and not required:
        del schema["required"]


class PluginConfig(BaseModel):
    """Base of every plugin config: unknown keys are an error, not silently ignored.

    `SecretStr` fields may be given as `<field>_env` instead (see the module docstring).
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra=_document_env_references
    )

    @model_validator(mode="before")
    @classmethod
    def _env_references(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        context = info.context if isinstance(info.context, dict) else {}
        environ: Mapping[str, str] | None = context.get("environ")
        return _resolve_env_references(cls, data, environ)


C = TypeVar("C", bound=PluginConfig)


def _ignore_progress(rows: int) -> None:
    return None


def _no_state() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class TaskContext:
    """What a plugin may know about the task it runs in."""

    job_definition_id: uuid.UUID
    run_id: uuid.UUID
    task_id: uuid.UUID
    attempt: int
    data_root: Path
    report_progress: Callable[[int], None] = field(default=_ignore_progress)
    """Call with the rows handled so far; cheap, may be called per batch."""
    state: Mapping[str, Any] = field(default_factory=_no_state)
    """What the job kept from its earlier completed runs (read-only)."""
    http_allowlist: tuple[str, ...] = ()
    """Hosts and CIDRs (`ORC_HTTP_ALLOWLIST`) network plugins may reach though private."""
    _state_update: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def update_state(self, key: str, value: Any) -> None:
        """Keep `value` (JSON) under `key` for the job's next runs.

        The engine stores it only when this run completes, so a failed run starts again
        from the old state.
        """
        if not key or len(key) > MAX_STATE_KEY_LENGTH:
            raise ValueError(f"a state key has 1 to {MAX_STATE_KEY_LENGTH} characters")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"state value for {key!r} is not JSON: {exc}") from exc
        self._state_update[key] = value

    @property
    def state_update(self) -> dict[str, Any]:
        """The keys set with `update_state` during this task."""
        return dict(self._state_update)


class Extractor(ABC, Generic[C]):
    """Reads a source and yields Arrow record batches of bounded size."""

    config_model: ClassVar[type[PluginConfig]]

    def __init__(self, config: C, context: TaskContext) -> None:
        self.config = config
        self.context = context

    @abstractmethod
    def extract(self) -> Iterator[pa.RecordBatch]:
        """Yield batches; raise `common.errors.PermanentError` for what a retry cannot fix."""


class Loader(ABC, Generic[C]):
    """Writes record batches into a destination, idempotently per run.

    The same LOAD task run twice (a redelivery after a crash) must leave the destination
    as if it ran once; `context.run_id` is the key to make that so.
    """

    config_model: ClassVar[type[PluginConfig]]

    def __init__(self, config: C, context: TaskContext) -> None:
        self.config = config
        self.context = context

    @abstractmethod
    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        """Write every batch; return the number of rows written."""


def validate_config(
    model: type[PluginConfig],
    raw: dict[str, Any],
    data_root: Path,
    *,
    environ: Mapping[str, str] | None = None,
) -> PluginConfig:
    """Validate a raw config; path fields are checked against `data_root`.

    `environ` resolves `<field>_env` references (the worker passes `os.environ`); without
    it (the API) a reference is only checked to be a variable's name.
    """
    return model.model_validate(raw, context={"data_root": data_root, "environ": environ})


def worker_environ() -> Mapping[str, str]:
    """The environment `<field>_env` references are read from."""
    return os.environ
