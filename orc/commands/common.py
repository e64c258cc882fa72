"""What every client command needs: settings, an API client, and input files."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from common.settings import Settings
from orc.client import ApiClient, api_url
from orc.output import errors_as_lines, fail
from orc.tokens import cli_token


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"ORC_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        fail(f"invalid settings: {problems}")


@contextmanager
def api() -> Iterator[ApiClient]:
    """A client of the API the settings name, with the CLI's token; errors become one line."""
    settings = load_settings()
    with errors_as_lines(), ApiClient(api_url(settings), cli_token(settings)) as client:
        yield client


def read_document(path: str) -> dict[str, Any]:
    """A JSON or YAML mapping from a file (`-`: standard input). JSON is chosen by the
    `.json` suffix; anything else is read as YAML, which also reads JSON."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    try:
        document = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fail(f"{path} is not valid {'JSON' if path.endswith('.json') else 'YAML'}: {first}")
    if not isinstance(document, dict):
        fail(f"{path} must hold one mapping (a job's fields), not {type(document).__name__}")
    return document
