from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from plugins.loading import coalesced


def batches(*sizes: int) -> list[pa.RecordBatch]:
    start = 0
    out: list[pa.RecordBatch] = []
    for size in sizes:
        out.append(pa.record_batch({"n": list(range(start, start + size))}))
        start += size
    return out


def values(stream: list[pa.RecordBatch]) -> list[int]:
    return [n for batch in stream for n in batch.column("n").to_pylist()]


def test_small_batches_are_merged_until_they_reach_the_size() -> None:
    source = batches(3, 3, 3, 3, 1)

    merged = list(coalesced(source, 5))

    assert [b.num_rows for b in merged] == [6, 6, 1]
    assert values(merged) == values(source)


def test_a_batch_as_large_as_the_size_passes_through_unchanged() -> None:
    big, small = batches(10, 2)

    merged = list(coalesced([big, small], 5))

    assert merged[0] is big
    assert [b.num_rows for b in merged] == [10, 2]


def test_a_large_batch_after_small_ones_joins_them() -> None:
    source = batches(2, 10, 4)

    merged = list(coalesced(source, 5))

    assert [b.num_rows for b in merged] == [12, 4]
    assert values(merged) == values(source)


def test_no_batches_give_no_batches() -> None:
    assert list(coalesced([], 5)) == []


def test_batches_are_read_only_as_far_as_needed() -> None:
    pulled: list[int] = []

    def source() -> Iterator[pa.RecordBatch]:
        for batch in batches(3, 3, 3, 3):
            pulled.append(batch.num_rows)
            yield batch

    stream = coalesced(source(), 5)
    first = next(stream)

    assert first.num_rows == 6
    assert len(pulled) == 2
