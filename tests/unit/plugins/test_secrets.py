"""Secrets: masked for the API, sealed for the bus, scrubbed from error text."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import Field, SecretStr

from common.errors import PermanentError
from common.settings import Settings
from plugins.base import PluginConfig
from plugins.secrets import (
    MASK,
    load_or_create_key_file,
    mask_config,
    redact,
    seal_config,
    secret_key,
    secret_values,
    unmask_config,
    unseal_config,
)


class Config(PluginConfig):
    url: str
    dsn: SecretStr
    password: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)


RAW = {
    "url": "https://example.com",
    "dsn": "postgresql://u:pw@h/db",
    "headers": {"Authorization": "Bearer abc", "X-Key": "k123"},
    "password_env": "PG_PASSWORD",
}
KEY = Fernet.generate_key().decode()


def test_mask_hides_every_secret_and_keeps_the_rest() -> None:
    masked = mask_config(Config, RAW)
    assert masked == {
        "url": "https://example.com",
        "dsn": MASK,
        "headers": {"Authorization": MASK, "X-Key": MASK},
        "password_env": "PG_PASSWORD",
    }
    assert RAW["dsn"] == "postgresql://u:pw@h/db"  # the input is not changed


def test_mask_hides_sealed_values_and_skips_absent_ones() -> None:
    sealed = seal_config(Config, {"url": "u", "dsn": "d"}, KEY)
    assert mask_config(Config, sealed) == {"url": "u", "dsn": MASK}


def test_unmask_keeps_stored_secrets_where_the_client_sent_the_mask() -> None:
    update = mask_config(Config, RAW) | {
        "url": "https://other",
        "headers": {"X-Key": "new", "Authorization": MASK},
    }
    merged = unmask_config(Config, update, RAW)
    assert merged["dsn"] == RAW["dsn"]
    assert merged["url"] == "https://other"
    assert merged["headers"] == {"X-Key": "new", "Authorization": "Bearer abc"}


def test_seal_then_unseal_gives_the_config_back() -> None:
    sealed = seal_config(Config, RAW, KEY)
    text = json.dumps(sealed)
    for secret in ("pw@h", "Bearer abc", "k123"):
        assert secret not in text
    assert set(sealed["dsn"]) == {"$secret"}
    assert sealed["password_env"] == "PG_PASSWORD"
    assert unseal_config(sealed, KEY) == RAW


def test_a_config_with_no_secret_fields_is_copied_without_touching_the_key() -> None:
    class Plain(PluginConfig):
        url: str

    raw = {"url": "https://example.com"}
    # Every dispatch is sealed: a config with nothing to seal must not cost a cipher.
    sealed = seal_config(Plain, raw, "not a fernet key")
    assert sealed == raw and sealed is not raw


def test_sealing_twice_does_not_seal_a_token() -> None:
    once = seal_config(Config, RAW, KEY)
    assert unseal_config(seal_config(Config, once, KEY), KEY) == RAW


def test_a_rotated_key_list_still_opens_old_tokens() -> None:
    old = KEY
    new = Fernet.generate_key().decode()
    sealed = seal_config(Config, RAW, old)
    assert unseal_config(sealed, f"{new},{old}") == RAW


def test_a_wrong_key_is_a_permanent_error_naming_the_field() -> None:
    sealed = seal_config(Config, RAW, KEY)
    with pytest.raises(PermanentError, match=r"dsn cannot be decrypted"):
        unseal_config(sealed, Fernet.generate_key())


def test_a_sealed_value_without_a_key_is_a_permanent_error() -> None:
    with pytest.raises(PermanentError, match="no secret key"):
        unseal_config(seal_config(Config, RAW, KEY), None)


def test_unseal_without_sealed_values_needs_no_key() -> None:
    assert unseal_config({"url": "x", "n": [1, {"a": 2}]}, None) == {"url": "x", "n": [1, {"a": 2}]}


def test_secret_values_of_a_validated_config() -> None:
    config = Config.model_validate({"url": "u", "dsn": "d-1", "headers": {"A": "h-1"}})
    assert sorted(secret_values(config)) == ["d-1", "h-1"]


def test_redact_masks_plain_and_url_quoted_forms() -> None:
    text = "failed for postgresql://u:p@ss w0rd@h and ?key=p%40ss%20w0rd and p%40ss+w0rd"
    assert (
        redact(text, ["p@ss w0rd"])
        == f"failed for postgresql://u:{MASK}@h and ?key={MASK} and {MASK}"
    )
    assert redact("a b", ["a"]) == "a b"


def test_key_file_is_made_once_with_owner_only_rights(tmp_path: Path) -> None:
    path = tmp_path / "orc" / "secret.key"
    first = load_or_create_key_file(path)
    assert load_or_create_key_file(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(first.encode())


def test_settings_key_wins_over_the_file(tmp_path: Path) -> None:
    settings = Settings(secret_key=KEY, secret_key_file=tmp_path / "k")
    assert secret_key(settings) == KEY
    assert not (tmp_path / "k").exists()
    from_file = secret_key(Settings(secret_key_file=tmp_path / "k"))
    assert (tmp_path / "k").read_text().strip() == from_file


def test_an_invalid_configured_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a valid Fernet key"):
        secret_key(Settings(secret_key="short", secret_key_file=tmp_path / "k"))
