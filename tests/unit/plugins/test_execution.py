"""`worker.execution`: one task attempt's plugin, its state update, its secrets."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from common.errors import PermanentError, TransientError
from common.events import TaskDispatched
from common.staging import StagingArea
from common.states import TaskType
from plugins import registry
from plugins.base import Extractor, Loader, PluginConfig
from plugins.secrets import seal_config
from tests.builders import extract_dispatch
from worker.execution import ExecutionOptions, TaskResult, execute_task

KEY = Fernet.generate_key().decode()


class SourceConfig(PluginConfig):
    token: SecretStr
    fail: str | None = None


class Source(Extractor[SourceConfig]):
    config_model = SourceConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        if self.config.fail == "permanent":
            raise PermanentError(f"bad token {self.config.token.get_secret_value()}")
        if self.config.fail == "other":
            raise RuntimeError(f"connection to https://x?t={self.config.token.get_secret_value()}")
        if self.config.fail == "plain":
            raise TransientError("nothing secret here")
        last = int(self.context.state.get("cursor", 0))
        yield pa.record_batch({"n": [last + 1, last + 2]})
        self.context.update_state("cursor", last + 2)
        self.context.update_state("token_seen", self.config.token.get_secret_value())


class SinkConfig(PluginConfig):
    pass


class Sink(Loader[SinkConfig]):
    config_model = SinkConfig
    seen: list[Any] = []

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        table = pa.Table.from_batches(list(batches), schema=schema)
        Sink.seen.append(table.to_pydict())
        return table.num_rows


@pytest.fixture(autouse=True)
def plugins() -> Iterator[None]:
    registry.register_extractor("fake-source", Source)
    registry.register_loader("fake-sink", Sink)
    yield
    registry.clear_registrations()


@pytest.fixture
def staging(tmp_path: Path) -> StagingArea:
    return StagingArea(str(tmp_path / "staging"))


def dispatched(config: dict[str, Any], **fields: Any) -> TaskDispatched:
    return extract_dispatch("fake-source", config, **fields)


def execute(task: TaskDispatched, staging: StagingArea, tmp_path: Path) -> TaskResult:
    return execute_task(
        task, staging, tmp_path, lambda rows: None, ExecutionOptions(secret_key=KEY)
    )


def test_extract_reads_the_state_and_returns_its_update(
    staging: StagingArea, tmp_path: Path
) -> None:
    task = dispatched({"token": "t"}, state={"cursor": 10})
    result = execute(task, staging, tmp_path)
    assert result.rows == 2
    assert result.staged is not None and result.staged.rows == 2
    assert result.state_update == {"cursor": 12, "token_seen": "t"}


def test_load_reads_what_extract_staged(staging: StagingArea, tmp_path: Path) -> None:
    extract = dispatched({"token": "t"})
    staged = execute(extract, staging, tmp_path).staged
    load = extract.model_copy(
        update={"task_type": TaskType.LOAD, "plugin": "fake-sink", "config": {}, "staged": staged}
    )
    result = execute(load, staging, tmp_path)
    assert (result.rows, result.staged, result.state_update) == (2, None, None)
    assert Sink.seen[-1] == {"n": [1, 2]}


def test_a_sealed_secret_is_opened_in_the_worker(staging: StagingArea, tmp_path: Path) -> None:
    config = seal_config(SourceConfig, {"token": "abc-123"}, KEY)
    result = execute(dispatched(config), staging, tmp_path)
    assert result.state_update is not None
    assert result.state_update["token_seen"] == "abc-123"


def test_an_env_reference_is_read_from_the_worker_environment(
    staging: StagingArea, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TOKEN", "from-env")
    result = execute(dispatched({"token_env": "FAKE_TOKEN"}), staging, tmp_path)
    assert result.state_update is not None
    assert result.state_update["token_seen"] == "from-env"


def test_a_missing_env_variable_is_permanent_and_named(
    staging: StagingArea, tmp_path: Path
) -> None:
    with pytest.raises(PermanentError, match="NO_SUCH_VARIABLE_X is not set"):
        execute(dispatched({"token_env": "NO_SUCH_VARIABLE_X"}), staging, tmp_path)


def test_an_invalid_config_error_does_not_show_the_values(
    staging: StagingArea, tmp_path: Path
) -> None:
    with pytest.raises(PermanentError, match="invalid plugin config") as caught:
        execute(dispatched({"token": "hunter22", "surprise": "hunter22"}), staging, tmp_path)
    assert "hunter22" not in str(caught.value)
    assert "surprise" in str(caught.value)


@pytest.mark.parametrize(
    ("fail", "kind"), [("permanent", PermanentError), ("other", TransientError)]
)
def test_a_secret_in_an_error_is_masked_keeping_the_retry_class(
    staging: StagingArea, tmp_path: Path, fail: str, kind: type[Exception]
) -> None:
    config = seal_config(SourceConfig, {"token": "s3cr3t/value", "fail": fail}, KEY)
    with pytest.raises(kind) as caught:
        execute(dispatched(config), staging, tmp_path)
    assert "s3cr3t" not in str(caught.value)
    assert "***" in str(caught.value)
    assert caught.value.__cause__ is None


def test_an_error_without_a_secret_is_raised_as_itself(
    staging: StagingArea, tmp_path: Path
) -> None:
    with pytest.raises(TransientError, match="nothing secret here") as caught:
        execute(dispatched({"token": "abc", "fail": "plain"}), staging, tmp_path)
    assert type(caught.value) is TransientError


def test_load_without_staged_input_is_permanent(staging: StagingArea, tmp_path: Path) -> None:
    task = dispatched({}).model_copy(update={"task_type": TaskType.LOAD, "plugin": "fake-sink"})
    with pytest.raises(PermanentError, match="without staged input"):
        execute(task, staging, tmp_path)


def test_options_from_settings_split_the_allowlist(tmp_path: Path) -> None:
    from common.settings import Settings

    settings = Settings(
        http_allowlist=" 127.0.0.1, 10.0.0.0/8 ,,api.internal",
        secret_key=KEY,
        secret_key_file=tmp_path / "k",
    )
    options = ExecutionOptions.from_settings(settings)
    assert options.http_allowlist == ("127.0.0.1", "10.0.0.0/8", "api.internal")
    assert options.secret_key == KEY
