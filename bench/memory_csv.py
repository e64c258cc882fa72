"""Peak memory of a worker's CSV → staging → DuckDB task, for a small and a large CSV.

Each size runs in a fresh child process doing what a worker does for one job: the `csv`
extractor streams the file into the staging area (Parquet), then the `duckdb` loader
streams it back into a table. The parent reads the child's peak RSS (`ru_maxrss` from
`wait4`). Memory bounded by the batch size means the large file's peak stays close to
the small one's (goal: at most 1.5x).

    python bench/memory_csv.py                 # 100 MB and 1000 MB, in /tmp
    python bench/memory_csv.py --sizes 50,200 --workdir /var/tmp

The last line printed is JSON: {"peak_rss_mb": {...}, "ratio": ..., "goal": 1.5, "ok": ...}.
Generated files are deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROWS_PER_CHUNK = 500_000
GOAL = 1.5


def generate_csv(path: Path, megabytes: int) -> int:
    """Write a CSV of about `megabytes` MB (ids, names, scores, cities, timestamps)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    target = megabytes * 1_000_000
    rows = 0
    cities = pa.array(["Berlin", "Paris", "Lisbon", "Oslo", "Rome", "Vienna", "Prague"])
    with pacsv.CSVWriter(
        str(path),
        pa.schema(
            [
                ("id", pa.int64()),
                ("name", pa.string()),
                ("score", pa.float64()),
                ("city", pa.string()),
                ("created_at", pa.timestamp("s")),
            ]
        ),
    ) as writer:
        while path.stat().st_size < target:
            ids = pa.array(range(rows, rows + ROWS_PER_CHUNK), pa.int64())
            names = pc.binary_join_element_wise("name-", pc.cast(ids, pa.string()), "")
            scores = pc.divide(pc.cast(pc.multiply(ids, 7919), pa.float64()), 1000.0)
            city = pc.take(cities, pc.cast(pc.bit_wise_and(ids, 3), pa.int64()))
            created = pc.cast(pc.add(ids, 1_700_000_000), pa.timestamp("s"))
            writer.write_table(
                pa.table(
                    {"id": ids, "name": names, "score": scores, "city": city, "created_at": created}
                )
            )
            rows += ROWS_PER_CHUNK
    return rows


def child(csv_path: Path, workdir: Path) -> None:
    """One worker-like task pair, in this (fresh) process."""
    import resource

    from common.staging import StagingArea
    from plugins.base import TaskContext, validate_config
    from plugins.csv_extractor import CsvConfig, CsvExtractor
    from plugins.duckdb_loader import DuckDBConfig, DuckDBLoader

    data_root = csv_path.parent
    staging = StagingArea(str(workdir / "staging"))
    run_id = uuid.uuid4()

    def context(root: Path) -> TaskContext:
        return TaskContext(
            job_definition_id=uuid.uuid4(),
            run_id=run_id,
            task_id=uuid.uuid4(),
            attempt=1,
            data_root=root,
        )

    started = time.monotonic()
    csv_config = validate_config(CsvConfig, {"path": csv_path.name}, data_root)
    assert isinstance(csv_config, CsvConfig)
    staged = staging.write(
        run_id, uuid.uuid4(), CsvExtractor(csv_config, context(data_root)).extract()
    )
    extracted = time.monotonic()
    database = workdir / f"bench-{run_id.hex[:8]}.duckdb"
    duck_config = validate_config(
        DuckDBConfig, {"database": str(database), "table": "rows"}, workdir
    )
    assert isinstance(duck_config, DuckDBConfig)
    loader = DuckDBLoader(duck_config, context(workdir))
    schema, batches = staging.read(staged)
    loaded = loader.load(schema, batches)
    finished = time.monotonic()
    print(
        json.dumps(
            {
                "rows": loaded,
                "staged_rows": staged.rows,
                "extract_seconds": round(extracted - started, 2),
                "load_seconds": round(finished - extracted, 2),
                "self_maxrss_mb": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
            }
        )
    )


def run_child(csv_path: Path, workdir: Path) -> dict[str, float]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", str(csv_path), str(workdir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    process.stdout.close()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"child failed ({process.returncode}) for {csv_path}")
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # kilobytes on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000", help="CSV sizes in MB, smallest first")
    parser.add_argument("--workdir", default=tempfile.gettempdir())
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child", nargs=2, metavar=("CSV", "WORKDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return

    sizes = [int(size) for size in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="orc-bench-", dir=args.workdir))
    peaks: dict[str, float] = {}
    try:
        for size in sizes:
            data = root / f"data-{size}"
            data.mkdir()
            csv_path = data / f"rows-{size}mb.csv"
            started = time.monotonic()
            rows = generate_csv(csv_path, size)
            generated = time.monotonic() - started
            work = root / f"work-{size}"
            work.mkdir()
            result = run_child(csv_path, work)
            peaks[str(size)] = result["peak_rss_mb"]
            print(
                f"{size:>6} MB  {rows:>11,} rows  peak RSS {result['peak_rss_mb']:>7.1f} MB  "
                f"extract {result['extract_seconds']:.1f}s  load {result['load_seconds']:.1f}s  "
                f"(generated in {generated:.1f}s)",
                flush=True,
            )
            if not args.keep:
                shutil.rmtree(data)
                shutil.rmtree(work)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    smallest, largest = peaks[str(sizes[0])], peaks[str(sizes[-1])]
    ratio = round(largest / smallest, 3)
    print(json.dumps({"peak_rss_mb": peaks, "ratio": ratio, "goal": GOAL, "ok": ratio <= GOAL}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
