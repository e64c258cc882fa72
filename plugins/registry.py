"""Find extractors and loaders by name: entry points, plus in-process registrations.

Installed packages declare plugins under the `orc.extractors` and `orc.loaders` entry-point
groups. Tests (and embedding programs) may register a class in-process without installing a
package; such a registration wins over an entry point of the same name.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from common.errors import PluginNotFound
from plugins.base import Extractor, Loader

EXTRACTOR_GROUP = "orc.extractors"
LOADER_GROUP = "orc.loaders"

_registered_extractors: dict[str, type[Extractor[Any]]] = {}
_registered_loaders: dict[str, type[Loader[Any]]] = {}


@functools.cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    # Scanning installed distributions reads many metadata files: do it once per process.
    return {ep.name: ep for ep in entry_points(group=group)}


_loaded: dict[tuple[str, str], Any] = {}
"""Entry points loaded so far: every dispatch and every attempt looks its plugin up, and
`EntryPoint.load()` goes through the import machinery each time."""


def _load(ep: EntryPoint, base: type[Any]) -> Any:
    found = _loaded.get((ep.group, ep.name))
    if found is not None:
        return found
    try:
        obj = ep.load()
    except (ImportError, AttributeError) as exc:
        raise PluginNotFound(f"entry point {ep.group}:{ep.name} cannot be loaded: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise PluginNotFound(f"entry point {ep.group}:{ep.name} ({ep.value}) is not a {base}")
    _loaded[(ep.group, ep.name)] = obj
    return obj


def extractors() -> dict[str, type[Extractor[Any]]]:
    """Every known extractor by name; importing each plugin module."""
    found = {name: _load(ep, Extractor) for name, ep in _entry_points(EXTRACTOR_GROUP).items()}
    return found | _registered_extractors


def loaders() -> dict[str, type[Loader[Any]]]:
    """Every known loader by name; importing each plugin module."""
    found = {name: _load(ep, Loader) for name, ep in _entry_points(LOADER_GROUP).items()}
    return found | _registered_loaders


def _get(kind: str, name: str, registered: dict[str, Any], group: str, base: type[Any]) -> Any:
    if name in registered:
        return registered[name]
    eps = _entry_points(group)
    if name in eps:
        # Only the requested plugin is imported: a broken neighbour must not break it.
        return _load(eps[name], base)
    known = ", ".join(sorted(set(eps) | set(registered))) or "none"
    raise PluginNotFound(f"no {kind} named {name!r}; known {kind}s: {known}")


def get_extractor(name: str) -> type[Extractor[Any]]:
    """The extractor class registered as `name`; `PluginNotFound` lists the known names."""
    cls: type[Extractor[Any]] = _get(
        "extractor", name, _registered_extractors, EXTRACTOR_GROUP, Extractor
    )
    return cls


def get_loader(name: str) -> type[Loader[Any]]:
    """The loader class registered as `name`; `PluginNotFound` lists the known names."""
    cls: type[Loader[Any]] = _get("loader", name, _registered_loaders, LOADER_GROUP, Loader)
    return cls


def register_extractor(name: str, cls: type[Extractor[Any]]) -> None:
    """Make `cls` known as `name` in this process, over any entry point of that name."""
    _registered_extractors[name] = cls


def register_loader(name: str, cls: type[Loader[Any]]) -> None:
    """Make `cls` known as `name` in this process, over any entry point of that name."""
    _registered_loaders[name] = cls


def refresh() -> None:
    """Forget the entry points found so far: a package installed since is seen next time."""
    _entry_points.cache_clear()
    _loaded.clear()


def clear_registrations() -> None:
    """Forget in-process registrations (test teardown); entry points stay."""
    _registered_extractors.clear()
    _registered_loaders.clear()
