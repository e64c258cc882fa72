"""Secret config values: masked for people, sealed on the bus, scrubbed from errors.

A plugin declares a field secret by typing it `SecretStr` (or `dict[str, SecretStr]` for
values such as headers). Then:

- the API shows it as `"***"` (`mask_config`), and keeps the stored value when a client
  sends that mask back (`unmask_config`);
- on the bus (`TaskDispatched.config`) it travels as `{"$secret": "<Fernet token>"}`
  (`seal_config` before dispatch, `unseal_config` in the worker), encrypted with the key
  from `ORC_SECRET_KEY`, or from the key file `ORC_SECRET_KEY_FILE` made on first use
  (`secret_key`);
- error text that would reach an event or a log has the values replaced (`redact`).

A config may name an environment variable instead of holding the value
(`{"password_env": "PG_PASSWORD"}`, `plugins.base`): such a reference is not secret and
stays as it is everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, SecretStr

from common.errors import PermanentError
from plugins.base import secret_fields

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

    from common.settings import Settings

MASK = "***"
SEALED = "$secret"
"""The one key of a sealed value: `{"$secret": "<token>"}`."""


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(SEALED), str)


def mask_config(model: type[BaseModel], raw: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `raw` with every secret value replaced by `"***"` (for API responses)."""
    masked = dict(raw)
    for name, kind in secret_fields(model).items():
        value = masked.get(name)
        if value is None:
            continue
        if kind == "mapping" and isinstance(value, dict):
            masked[name] = dict.fromkeys(value, MASK)
        else:
            masked[name] = MASK
    return {key: MASK if is_sealed(value) else value for key, value in masked.items()}


def unmask_config(
    model: type[BaseModel], raw: Mapping[str, Any], stored: Mapping[str, Any]
) -> dict[str, Any]:
    """`raw` (a client's update) with each `"***"` replaced by the `stored` value, so a
    client may send back what it read without erasing the secrets."""
    merged = dict(raw)
    for name, kind in secret_fields(model).items():
        value = merged.get(name)
        if value == MASK and name in stored:
            merged[name] = stored[name]
        elif kind == "mapping" and isinstance(value, dict):
            old = stored.get(name)
            old = old if isinstance(old, dict) else {}
            merged[name] = {
                key: old[key] if item == MASK and key in old else item
                for key, item in value.items()
            }
    return merged


@functools.lru_cache(maxsize=8)
def _fernet(key: bytes | str) -> MultiFernet:
    # Cached: building one costs more than sealing a value with it, and it holds no state.
    from cryptography.fernet import Fernet, MultiFernet

    text = key.decode() if isinstance(key, bytes) else key
    keys = [part.strip() for part in text.split(",") if part.strip()]
    if not keys:
        raise ValueError("the secret key is empty")
    # Several comma-separated keys: the first encrypts, any decrypts (key rotation).
    return MultiFernet([Fernet(part.encode()) for part in keys])


def seal_config(model: type[BaseModel], raw: Mapping[str, Any], key: bytes | str) -> dict[str, Any]:
    """A copy of `raw` whose secret values are `{"$secret": token}` (for the bus).

    Values already sealed, `None`, and `<field>_env` references are left as they are.
    """
    fields = secret_fields(model)
    if not fields:
        return dict(raw)
    fernet = _fernet(key)

    def seal(value: Any) -> Any:
        if isinstance(value, str):
            return {SEALED: fernet.encrypt(value.encode()).decode()}
        return value

    sealed = dict(raw)
    for name, kind in fields.items():
        if name not in sealed:
            continue
        value = sealed[name]
        if kind == "mapping" and isinstance(value, dict):
            sealed[name] = {item: seal(v) for item, v in value.items()}
        else:
            sealed[name] = seal(value)
    return sealed


def unseal_config(raw: Mapping[str, Any], key: bytes | str | None) -> dict[str, Any]:
    """A copy of `raw` with every `{"$secret": token}` (at any depth) decrypted.

    A token the key cannot open (another deployment's key, a rotated-out key) is a
    `PermanentError` naming where it is; so is a sealed value with no key configured.
    """
    fernet = None if key is None else _fernet(key)

    def unseal(value: Any, where: str) -> Any:
        if is_sealed(value):
            if fernet is None:
                raise PermanentError(f"{where} is sealed but this worker has no secret key")
            from cryptography.fernet import InvalidToken

            try:
                return fernet.decrypt(value[SEALED].encode()).decode()
            except InvalidToken as exc:
                raise PermanentError(
                    f"{where} cannot be decrypted with this worker's secret key "
                    "(ORC_SECRET_KEY differs between the coordinator and the worker?)"
                ) from exc
        if isinstance(value, dict):
            return {k: unseal(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, list):
            return [unseal(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return value

    return {k: unseal(v, k) for k, v in raw.items()}


def secret_values(config: BaseModel) -> list[str]:
    """The plain secret values of a validated config (to scrub from error text)."""
    found: list[str] = []
    for name in secret_fields(type(config)):
        value = getattr(config, name, None)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, Mapping):
            found.extend(v.get_secret_value() for v in value.values() if isinstance(v, SecretStr))
    return [value for value in found if value]


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with each secret (as written, or URL-quoted as it appears in URLs) masked."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) < 3:
            continue  # masking "a" everywhere would make the text useless and hide nothing
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, MASK)
    return text


def generate_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def load_or_create_key_file(path: Path) -> str:
    """The key in `path`; made (mode 0600) when missing. Two processes racing to make it
    both end up with the one that won."""
    path = path.expanduser()
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def _read_key(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise PermanentError(f"the secret key file {path} is empty")
    return key


def secret_key(settings: Settings) -> str:
    """The key that seals and unseals config secrets: `ORC_SECRET_KEY` when set (one key,
    or several comma-separated for rotation), else the key file `ORC_SECRET_KEY_FILE`,
    made on first use. Components on different machines must share `ORC_SECRET_KEY`."""
    if settings.secret_key is not None:
        key = settings.secret_key.get_secret_value()
    else:
        key = load_or_create_key_file(settings.secret_key_file)
    try:
        _fernet(key)
    except ValueError as exc:
        raise ValueError(f"the secret key is not a valid Fernet key: {exc}") from exc
    return key
