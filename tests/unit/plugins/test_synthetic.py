"""`generate` and `null`: the plugins for testing pipelines and measuring the engine."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from plugins.synthetic import GenerateConfig, GenerateExtractor, NullConfig, NullLoader
from tests.unit.plugins.support import context


def test_generate_makes_the_rows_asked_for_in_batches(tmp_path: Path) -> None:
    progress: list[int] = []
    extractor = GenerateExtractor(
        GenerateConfig(rows=5, batch_rows=2), context(tmp_path, progress=progress)
    )
    batches = list(extractor.extract())
    assert [b.num_rows for b in batches] == [2, 2, 1]
    table = pa.Table.from_batches(batches)
    assert table.schema == pa.schema(
        [("id", pa.int64()), ("value", pa.float64()), ("label", pa.string())]
    )
    assert table.to_pydict() == {
        "id": [0, 1, 2, 3, 4],
        "value": [0.0, 0.5, 1.0, 1.5, 2.0],
        "label": ["row-0", "row-1", "row-2", "row-3", "row-4"],
    }
    assert progress == [2, 4, 5]


def test_generate_zero_rows_yields_nothing(tmp_path: Path) -> None:
    assert list(GenerateExtractor(GenerateConfig(rows=0), context(tmp_path)).extract()) == []


def test_null_counts_what_it_discards(tmp_path: Path) -> None:
    batches = list(
        GenerateExtractor(GenerateConfig(rows=7, batch_rows=3), context(tmp_path)).extract()
    )
    loader = NullLoader(NullConfig(), context(tmp_path))
    assert loader.load(batches[0].schema, iter(batches)) == 7
