"""How the CLI prints: rich tables for people, JSON for scripts, errors as one line.

Exit codes of the client commands (documented in `docs/cli.md`):
0 done (a followed run COMPLETED); 1 a followed run FAILED; 2 a followed run was
CANCELLED (click also exits 2 on a wrong command line); 3 the command could not be done
(the API answered an error, could not be reached, or an input file is unusable).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from common.errors import OrcError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 2
EXIT_ERROR = 3

F = TypeVar("F", bound=Callable[..., Any])


class Output(StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[
    Output,
    typer.Option(
        "--output", "-o", help="table for people, json for scripts.", case_sensitive=False
    ),
]


PIPE_WIDTH = 250
"""Width of tables written to a pipe or file: wide enough that lines do not wrap."""


def stdout() -> Console:
    # Built per call: typer's CliRunner swaps sys.stdout, and rich must write to the new one.
    console = Console(file=sys.stdout, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def stderr() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print `error: message` on stderr, one line, and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def errors_as_lines() -> Iterator[None]:
    """Turn the CLI's known errors into one line on stderr and exit code 3."""
    try:
        yield
    except OrcError as exc:
        fail(str(exc))


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


STATUS_STYLES = {
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "RUNNING": "cyan",
    "RETRYING": "magenta",
    "PENDING": "dim",
    "ACTIVE": "green",
    "LOST": "red",
    "STOPPED": "dim",
}


def styled(status: str | None) -> str:
    if status is None:
        return "-"
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def when(value: str | None) -> str:
    """An API time, shortened to local `YYYY-MM-DD HH:MM:SS`."""
    parsed = parse_time(value)
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M:%S") if parsed else "-"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def duration(start: str | None, end: str | None) -> str:
    begun, ended = parse_time(start), parse_time(end)
    if begun is None:
        return "-"
    return seconds(((ended or datetime.now(UTC)) - begun).total_seconds())


def rows(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


WRAPPING_COLUMNS = frozenset({"ERROR", "CONFIG FIELDS"})


def table(title: str | None, columns: Sequence[str], lines: Sequence[Sequence[str]]) -> Table:
    """A table whose cells stay on one line (people copy ids), but for long texts."""
    result = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD)
    for column in columns:
        wraps = column in WRAPPING_COLUMNS
        result.add_column(column, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    for line in lines:
        result.add_row(*line)
    return result


def fields(title: str, pairs: Sequence[tuple[str, str]]) -> Table:
    """A two-column table of one object's fields."""
    result = Table(title=title, title_justify="left", show_header=False, box=None)
    result.add_column(style="bold")
    result.add_column(overflow="fold")
    for key, value in pairs:
        result.add_row(key, value)
    return result
