"""Run the whole benchmark suite in sequence; collect the figures into bench/results.json.

    .venv/bin/python bench/run_all.py            # the suite, 6-10 minutes
    .venv/bin/python bench/run_all.py --quick    # throughput --runs 500, 1 scheduler tick
    .venv/bin/python bench/run_all.py --only latency,data_plane

Every step is one script run as a subprocess with a timeout (its output is streamed,
indented); the last line it prints is its JSON figures. The steps:

    throughput_sqlite     throughput.py --runs N --repeat 3 --store sqlite
    throughput_postgres   throughput.py --runs N --repeat 3 --store postgres
    throughput_workers2   throughput.py --runs N --repeat 3 --workers 2
    latency               latency.py                  (200 runs per path)
    data_plane            data_plane.py               (1M rows, 5 rounds)
    memory_csv            memory_csv.py               (100 MB and 1000 MB CSVs)
    scheduler_scale       scheduler_scale.py --ticks T  (10,000 jobs)
    trigger_to_done       trigger_to_done.py          (100k rows, 5 runs)
    components            components.py --runs 2000 --repeat 1  (CPU per run by component)
    cpu_per_run           cpu_per_run.py --store postgres --bursts B --runs 3000
                          (CPU per run of every process, engine and Celery; B = 4)

Every script runs with its own defaults (throughput N = 2000, scheduler_scale T = 2),
but components with one repetition. On a 2-core machine the suite took 6 minutes in an
average hour and 10.5 in a slow one (session 6, with components at two repetitions, 85 s;
at one, about 30 s), each throughput step a minute and a half. A slower engine makes the
throughput steps long (at 30 runs/s, 2000 runs x 3 rounds take about 4 minutes each and
would hit their 300 s timeout): then pass `--quick` (N = 500, T = 1: about 5 minutes), or
set `--throughput-runs` and `--scheduler-ticks` yourself.

A step that times out is interrupted (SIGINT to its process group, so its clean-up runs,
then SIGKILL after 30 s) and recorded with an "error". `bench/results.json` (`--output`)
is a list with one object per step: the script's JSON plus "step", "command",
"exit_code" and "elapsed_s"; it is rewritten after every step. At the end a markdown
table of the figures is printed. The exit code is 1 when a step failed or gave no JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


@dataclass(frozen=True)
class Step:
    name: str
    script: str
    args: tuple[str, ...]
    timeout: float

    def command(self) -> list[str]:
        return [sys.executable, str(BENCH / self.script), *self.args]


# Per step: the figures worth a column of the table, and the goal in words.
FIGURES: dict[str, tuple[tuple[str, ...], str]] = {
    "run_throughput": (
        ("engine_runs_per_s", "celery_chains_per_s", "ratio"),
        "ratio ≥ 1.0 (orc runs/s vs Celery chains/s)",
    ),
    "latency": (
        (
            "bus_p50_ms",
            "bus_p99_ms",
            "api_p50_ms",
            "api_p99_ms",
            "celery_p50_ms",
            "celery_p99_ms",
            "aiopika_p50_ms",
            "ratio_bus_vs_celery",
        ),
        "p50 ≤ 15 ms (bus), ≤ 25 ms (API)",
    ),
    "data_plane": (
        (
            "csv_duckdb_engine_s",
            "csv_duckdb_baseline_s",
            "csv_duckdb_ratio",
            "parquet_pg_engine_s",
            "parquet_pg_baseline_s",
            "parquet_pg_ratio",
        ),
        "ratio ≤ 1.4 for both",
    ),
    "memory_csv": (("peak_rss_mb", "ratio"), "1000 MB / 100 MB peak RSS ≤ 1.5"),
    "scheduler_scale": (
        (
            "lag_p50_s",
            "lag_p99_s",
            "lag_max_s",
            "missed",
            "doubled",
            "raw_publish_10k_s",
            "ratio_p99_lag_vs_raw_publish",
        ),
        "p99 lag ≤ 1 s, 0 missed, 0 doubled",
    ),
    "trigger_to_done": (
        ("median_s", "p_max_s", "baseline_duckdb_s", "ratio"),
        "median < 3 s (100k-row CSV → DuckDB)",
    ),
    "components": (
        (
            "worker_cpu_ms_per_task",
            "coordinator_cpu_ms_per_run",
            "relay_cpu_ms_per_message",
            "worker_vs_relay",
            "coordinator_vs_2_relays",
        ),
        "report (CPU per run of each component vs a bare aio-pika relay)",
    ),
    "cpu_per_run": (
        (
            "engine_cpu_ms_per_run",
            "celery_cpu_ms_per_chain",
            "ratio",
            "engine_by_process_ms",
            "celery_by_process_ms",
            "history_ratio",
        ),
        "report (all processes' CPU per run, engine vs Celery; history_ratio 1 = flat)",
    ),
}


def suite(args: argparse.Namespace) -> list[Step]:
    runs = args.throughput_runs or (500 if args.quick else 2000)
    ticks = args.scheduler_ticks or (1 if args.quick else 2)
    throughput = ("--runs", str(runs), "--repeat", "3")
    # One repetition: the suite must stay under 10 minutes in a slow hour too.
    components = ("--runs", "1000" if args.quick else "2000", "--repeat", "1")
    return [
        Step("throughput_sqlite", "throughput.py", (*throughput, "--store", "sqlite"), 300),
        Step("throughput_postgres", "throughput.py", (*throughput, "--store", "postgres"), 300),
        Step("throughput_workers2", "throughput.py", (*throughput, "--workers", "2"), 300),
        Step("latency", "latency.py", (), 240),
        Step("data_plane", "data_plane.py", (), 240),
        Step("memory_csv", "memory_csv.py", (), 240),
        Step("scheduler_scale", "scheduler_scale.py", ("--ticks", str(ticks)), 300),
        Step("trigger_to_done", "trigger_to_done.py", (), 180),
        Step("components", "components.py", components, 300),
        Step(
            "cpu_per_run",
            "cpu_per_run.py",
            ("--store", "postgres", "--bursts", "2" if args.quick else "4", "--runs", "3000"),
            300,
        ),
    ]


def interrupt(process: subprocess.Popen[str]) -> None:
    """SIGINT to the step's process group (KeyboardInterrupt: its `finally` clean-up
    runs, and `orc` processes stop gracefully), SIGKILL if it still runs 30 s later."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_step(step: Step) -> dict[str, Any]:
    """Run one script, echo its output, and return its last JSON line plus run facts."""
    command = step.command()
    print(f"\n=== {step.name}: {' '.join(command[1:])} (timeout {step.timeout:.0f} s)", flush=True)
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group: a timeout stops its children too
    )
    lines: list[str] = []

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            print(f"    {line}", end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    error: str | None = None
    try:
        process.wait(step.timeout)
    except subprocess.TimeoutExpired:
        error = f"timed out after {step.timeout:.0f} s"
        interrupt(process)
    except KeyboardInterrupt:
        interrupt(process)  # it runs in a session of its own: Ctrl-C did not reach it
        raise
    reader.join(10)
    elapsed = time.monotonic() - started
    figures: dict[str, Any] = {}
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("{") and text.endswith("}"):
            try:
                figures = json.loads(text)
            except json.JSONDecodeError:
                continue
            break
    if not figures and error is None:
        error = f"exit code {process.returncode} and no JSON line"
    entry: dict[str, Any] = {
        "step": step.name,
        **figures,
        "command": " ".join(["python", f"bench/{step.script}", *step.args]),
        "exit_code": process.returncode,
        "elapsed_s": round(elapsed, 1),
    }
    entry.setdefault("benchmark", step.name)
    if error is not None:
        entry["error"] = f"{error}; {entry['error']}" if "error" in entry else error
    print(f"=== {step.name}: {elapsed:.0f} s, exit code {process.returncode}", flush=True)
    return entry


def cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {cell(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None else str(value)


def kind(entry: dict[str, Any]) -> str:
    """The key of FIGURES that describes this entry."""
    if entry["step"].startswith("throughput"):
        return "run_throughput"
    return str(entry["step"])


def markdown(results: list[dict[str, Any]]) -> str:
    rows = [
        "| step | figures | goal | met | time s |",
        "|---|---|---|---|---|",
    ]
    for entry in results:
        keys, goal = FIGURES.get(kind(entry), ((), ""))
        if not keys:
            keys = tuple(
                k
                for k, v in entry.items()
                if isinstance(v, int | float) and k not in ("exit_code", "elapsed_s")
            )
        figures = "; ".join(f"{k} {cell(entry.get(k))}" for k in keys if k in entry)
        if "error" in entry:
            figures = f"{figures}; **error**: {entry['error']}" if figures else entry["error"]
        met = entry.get("met", entry.get("ok"))
        met_text = "yes" if met is True else "no" if met is False else "-"
        rows.append(
            f"| {entry['step']} | {figures.replace('|', '/')} | {goal} | {met_text} "
            f"| {entry['elapsed_s']:.0f} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="throughput --runs 500, scheduler_scale --ticks 1"
    )
    parser.add_argument(
        "--throughput-runs", type=int, default=None, help="--runs of throughput.py (2000)"
    )
    parser.add_argument(
        "--scheduler-ticks", type=int, default=None, help="--ticks of scheduler_scale (2)"
    )
    parser.add_argument("--only", default="", help="comma-separated step names to run")
    parser.add_argument("--output", type=Path, default=BENCH / "results.json")
    args = parser.parse_args()

    steps = suite(args)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = wanted - {s.name for s in steps}
        if unknown:
            parser.error(f"unknown steps {sorted(unknown)}; known: {[s.name for s in steps]}")
        steps = [s for s in steps if s.name in wanted]

    started = time.monotonic()
    results: list[dict[str, Any]] = []
    try:
        for step in steps:
            results.append(run_step(step))
            args.output.write_text(json.dumps(results, indent=2) + "\n")
    except KeyboardInterrupt:
        print("\ninterrupted: the results so far are kept", file=sys.stderr)
    total = time.monotonic() - started
    print(f"\n## Benchmark results ({total / 60:.1f} min, {os.cpu_count()} CPUs)\n")
    print(markdown(results))
    print(f"\nwritten to {args.output}")
    failed = [r["step"] for r in results if "error" in r or r.get("exit_code") not in (0, None)]
    return 1 if failed or len(results) < len(steps) else 0


if __name__ == "__main__":
    sys.exit(main())
