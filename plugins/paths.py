"""File paths in job configs, confined to `ORC_DATA_ROOT`.

A job config is user input that a worker will open with its own rights, so every path
field must stay inside the data root after `..` and symlinks are resolved. The check runs
twice: when the API validates the config (`DataPath`, a 422 naming the field) and when a
plugin opens the file (`ensure_inside`), since a symlink may have changed in between.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo

from common.errors import PathOutsideDataRoot, PermanentError


def _resolve_inside(path: str | os.PathLike[str], data_root: str | os.PathLike[str]) -> Path:
    """The resolved absolute path; a ValueError when it lies outside the resolved root."""
    root = Path(data_root).expanduser().resolve()
    try:
        # An absolute `path` replaces `root` in the join, so both kinds take the same road.
        resolved = (root / path).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise ValueError(f"path {os.fspath(path)!r} cannot be resolved: {exc}") from exc
    if not resolved.is_relative_to(root):
        raise ValueError(f"path {os.fspath(path)!r} resolves to {resolved}, outside {root}")
    return resolved


def _validate_data_path(value: Path, info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, dict) else {}
    data_root = context.get("data_root")
    if data_root is None:
        raise ValueError("no data_root in the validation context: cannot check this path")
    return _resolve_inside(value, data_root)


DataPath = Annotated[Path, AfterValidator(_validate_data_path)]
"""A path inside `info.context["data_root"]`; the validated value is resolved and absolute."""


def ensure_inside(path: str | os.PathLike[str], data_root: str | os.PathLike[str]) -> Path:
    """Resolve `path` (relative to `data_root`) and return it; raise `PathOutsideDataRoot`
    when it escapes the root."""
    try:
        return _resolve_inside(path, data_root)
    except ValueError as exc:
        raise PathOutsideDataRoot(str(exc)) from exc


GLOB_CHARACTERS = frozenset("*?[")


def is_glob(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a pattern (`*`, `?` or `[...]` in it) rather than one name."""
    return any(char in GLOB_CHARACTERS for char in os.fspath(path))


def expand_files(path: str | os.PathLike[str], data_root: str | os.PathLike[str]) -> list[Path]:
    """The files `path` names inside the data root: itself, or a glob's matches in sorted
    order (`**` for any depth). Every match is checked like `ensure_inside`, so a symlink
    in the tree cannot lead out. No match is a `PermanentError`."""
    root = Path(data_root).expanduser().resolve()
    if not is_glob(path):
        return [ensure_inside(path, root)]
    pattern = Path(path)
    if pattern.is_absolute():
        try:
            pattern = pattern.relative_to(root)
        except ValueError as exc:
            raise PathOutsideDataRoot(f"pattern {os.fspath(path)!r} is outside {root}") from exc
    if ".." in pattern.parts:
        raise PathOutsideDataRoot(f"pattern {os.fspath(path)!r} may not contain '..'")
    matches = sorted(ensure_inside(match, root) for match in root.glob(pattern.as_posix()))
    files = [match for match in dict.fromkeys(matches) if match.is_file()]
    if not files:
        raise PermanentError(f"no file matches {os.fspath(path)!r} under {root}")
    return files
