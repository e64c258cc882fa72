from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
import pytest

from common.errors import PluginNotFound
from plugins import registry
from plugins.base import Extractor, Loader, PluginConfig
from plugins.csv_extractor import CsvExtractor
from plugins.duckdb_loader import DuckDBLoader


class FakeExtractor(Extractor[PluginConfig]):
    config_model = PluginConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        yield pa.record_batch({"x": [1]})


class FakeLoader(Loader[PluginConfig]):
    config_model = PluginConfig

    def load(self, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
        return sum(batch.num_rows for batch in batches)


@pytest.fixture(autouse=True)
def _forget_registrations() -> Iterator[None]:
    yield
    registry.clear_registrations()


def test_installed_entry_points_are_found() -> None:
    assert registry.extractors()["csv"] is CsvExtractor
    assert registry.loaders()["duckdb"] is DuckDBLoader
    assert registry.get_extractor("csv") is CsvExtractor
    assert registry.get_loader("duckdb") is DuckDBLoader


def test_unknown_extractor_lists_the_known_names() -> None:
    with pytest.raises(PluginNotFound, match=r"'nope'.*csv") as caught:
        registry.get_extractor("nope")
    assert isinstance(caught.value, LookupError)


def test_unknown_loader_lists_the_known_names() -> None:
    with pytest.raises(PluginNotFound, match=r"'nope'.*duckdb"):
        registry.get_loader("nope")


def test_registered_plugins_are_visible_after_the_scan_is_cached() -> None:
    registry.extractors()
    registry.register_extractor("fake", FakeExtractor)
    registry.register_loader("fake", FakeLoader)
    assert registry.get_extractor("fake") is FakeExtractor
    assert registry.get_loader("fake") is FakeLoader
    assert registry.extractors()["fake"] is FakeExtractor
    assert registry.extractors()["csv"] is CsvExtractor
    assert registry.loaders()["fake"] is FakeLoader


def test_registration_wins_over_an_entry_point_of_the_same_name() -> None:
    registry.register_extractor("csv", FakeExtractor)
    assert registry.get_extractor("csv") is FakeExtractor
    assert registry.extractors()["csv"] is FakeExtractor


def test_clear_registrations_leaves_entry_points() -> None:
    registry.register_extractor("fake", FakeExtractor)
    registry.clear_registrations()
    with pytest.raises(PluginNotFound):
        registry.get_extractor("fake")
    assert registry.get_extractor("csv") is CsvExtractor


def test_an_entry_point_is_loaded_once_until_a_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    registry.refresh()
    loads: list[str] = []
    real_load = EntryPoint.load

    def counted(self: EntryPoint) -> object:
        loads.append(self.name)
        return real_load(self)

    monkeypatch.setattr(EntryPoint, "load", counted)
    for _ in range(3):
        assert registry.get_extractor("csv") is CsvExtractor
    assert loads == ["csv"]
    registry.refresh()
    assert registry.get_extractor("csv") is CsvExtractor
    assert loads == ["csv", "csv"]
