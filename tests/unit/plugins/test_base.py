"""The plugin interface: `<field>_env` references, the JSON Schema, the task's state."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import Field, SecretStr, ValidationError

from common.errors import PermanentError
from plugins.base import PluginConfig, TaskContext, secret_fields, validate_config


class Secretive(PluginConfig):
    user: str = "etl"
    password: SecretStr
    token: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)


def test_secret_fields_are_found_by_type() -> None:
    assert secret_fields(Secretive) == {"password": "value", "token": "value", "headers": "mapping"}


def test_env_reference_is_read_from_the_given_environment(tmp_path: Path) -> None:
    raw = {"password_env": "PG_PASSWORD", "headers_env": {"X-Key": "API_KEY"}}
    config = validate_config(
        Secretive, raw, tmp_path, environ={"PG_PASSWORD": "s3cret", "API_KEY": "k"}
    )
    assert isinstance(config, Secretive)
    assert config.password.get_secret_value() == "s3cret"
    assert config.headers["X-Key"].get_secret_value() == "k"


def test_without_an_environment_only_the_name_is_checked(tmp_path: Path) -> None:
    config = validate_config(Secretive, {"password_env": "NOT_SET_ANYWHERE"}, tmp_path)
    assert isinstance(config, Secretive)
    assert config.password.get_secret_value() == "${NOT_SET_ANYWHERE}"


def test_a_missing_variable_on_the_worker_names_it(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="PG_PASSWORD is not set"):
        validate_config(Secretive, {"password_env": "PG_PASSWORD"}, tmp_path, environ={})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"password_env": "ORC_SECRET_KEY"}, "reserved for the engine"),
        ({"password_env": "bad name"}, "must name an environment variable"),
        ({"password": "x", "password_env": "PW"}, "not both"),
        ({"password": "x", "headers_env": ["A"]}, "must map each key"),
        ({"password": "x", "headers": {"A": "1"}, "headers_env": {"A": "B"}}, "both"),
        ({"password": "x", "user_env": "USER"}, "Extra inputs"),
        ({}, "password"),
    ],
)
def test_bad_references_are_validation_errors(
    tmp_path: Path, raw: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_config(Secretive, raw, tmp_path, environ={"PW": "x", "B": "y"})


def test_json_schema_documents_the_env_keys_and_either_form() -> None:
    schema = Secretive.model_json_schema()
    assert schema["properties"]["password"]["format"] == "password"
    assert schema["properties"]["password_env"]["type"] == "string"
    assert schema["properties"]["headers_env"]["type"] == "object"
    assert "required" not in schema
    assert {"anyOf": [{"required": ["password"]}, {"required": ["password_env"]}]} in schema[
        "allOf"
    ]


def context() -> TaskContext:
    return TaskContext(
        job_definition_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        task_id=uuid.uuid4(),
        attempt=1,
        data_root=Path("."),
        state={"cursor:id": 3},
    )


def test_state_updates_are_collected() -> None:
    ctx = context()
    assert ctx.state["cursor:id"] == 3
    assert ctx.state_update == {}
    ctx.update_state("cursor:id", 10)
    ctx.update_state("seen", ["a", {"b": 1.5}])
    assert ctx.state_update == {"cursor:id": 10, "seen": ["a", {"b": 1.5}]}


def test_a_state_value_must_be_json() -> None:
    with pytest.raises(PermanentError, match="not JSON"):
        context().update_state("when", object())
    with pytest.raises(PermanentError, match="not JSON"):
        context().update_state("nan", float("nan"))


@pytest.mark.parametrize("key", ["", "k" * 201])
def test_a_state_key_has_a_bounded_length(key: str) -> None:
    with pytest.raises(ValueError, match="state key"):
        context().update_state(key, 1)
