"""The packages' dependency rules, read from the source with `ast`.

Components (`api`, `scheduler`, `worker`) talk only through the bus, so none imports
another; they build on `common` and `plugins`. `plugins` builds on `common`; `common`
builds on neither plugins nor components; and no library package imports `orc`, the
composition root that wires them all together.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = frozenset({"api", "scheduler", "worker"})
PROJECT = COMPONENTS | {"common", "plugins", "orc"}

# For each checked package: the project packages it must not import (its own name is
# always allowed; the stdlib and third-party packages always are).
FORBIDDEN: dict[str, frozenset[str]] = {
    "api": PROJECT - {"api", "common", "plugins"},
    "scheduler": PROJECT - {"scheduler", "common", "plugins"},
    "worker": PROJECT - {"worker", "common", "plugins"},
    "plugins": PROJECT - {"plugins", "common"},
    "common": PROJECT - {"common"},
}


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    imported: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.imported}"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module an import statement names, with relative imports made absolute.

    Imports anywhere count, inside functions and `if TYPE_CHECKING:` blocks too: a lazy
    import is still a dependency.
    """
    found: list[tuple[int, str]] = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def violations_in(source: str, module: str, file: str, is_package: bool = False) -> list[Violation]:
    owner = module.split(".")[0]
    forbidden = FORBIDDEN[owner]
    return [
        Violation(file, line, name)
        for line, name in imported_modules(source, module, is_package)
        if name.split(".")[0] in forbidden
    ]


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_boundaries(package: str) -> None:
    files = python_files(package)
    assert files, f"no Python files found under {ROOT / package}"
    found: list[Violation] = []
    for path in files:
        found += violations_in(
            path.read_text(encoding="utf-8"),
            _module_name(path, ROOT),
            str(path.relative_to(ROOT)),
            is_package=path.name == "__init__.py",
        )
    assert not found, (
        f"{package} may not import {', '.join(sorted(FORBIDDEN[package]))}; found:\n"
        + "\n".join(f"  {v}" for v in found)
    )


class TestTheChecker:
    """The checker itself catches what it must, so a green run above means something."""

    def test_catches_a_component_importing_another(self) -> None:
        source = (
            "import os\n"
            "from common.events import JobDue\n"
            "from scheduler.coordinator import handlers\n"
            "def f():\n"
            "    import worker.service\n"
        )
        found = violations_in(source, "api.jobs", "api/jobs.py")
        assert [str(v) for v in found] == [
            "api/jobs.py:3 imports scheduler.coordinator",
            "api/jobs.py:5 imports worker.service",
        ]

    def test_catches_common_importing_plugins_or_orc(self) -> None:
        source = "from plugins.base import Loader\nimport orc.runtime\nimport pydantic\n"
        found = violations_in(source, "common.bus", "common/bus.py")
        assert [v.imported for v in found] == ["plugins.base", "orc.runtime"]

    def test_catches_plugins_importing_a_component(self) -> None:
        found = violations_in("from worker import execution\n", "plugins.csv", "plugins/csv.py")
        assert [v.imported for v in found] == ["worker"]

    def test_resolves_relative_imports(self) -> None:
        # From scheduler/coordinator/handlers.py, `...worker` is the top-level worker.
        source = "from ..uow import UnitOfWork\nfrom ...worker import service\n"
        found = violations_in(
            source, "scheduler.coordinator.handlers", "scheduler/coordinator/handlers.py"
        )
        assert [v.imported for v in found] == ["worker"]
        assert imported_modules("from . import uow\n", "scheduler.coordinator", True) == [
            (1, "scheduler.coordinator")
        ]

    def test_allows_common_plugins_stdlib_and_third_party(self) -> None:
        source = (
            "import asyncio\nimport aio_pika\nfrom common.bus import Bus\n"
            "from plugins.registry import load\nfrom scheduler.cron_scheduler import x\n"
        )
        assert violations_in(source, "scheduler.service", "scheduler/service.py") == []

    def test_failure_message_lists_the_offences(self) -> None:
        found = violations_in("import api.app\n", "worker.service", "worker/service.py")
        assert "worker/service.py:1 imports api.app" in [str(v) for v in found]
