"""Extract a CSV file as a stream of Arrow record batches, in bounded memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
from pydantic import Field, field_validator

from common.errors import PermanentError
from plugins.base import Extractor, PluginConfig
from plugins.paths import DataPath, ensure_inside

MIB = 1024 * 1024


class CsvConfig(PluginConfig):
    """Where the CSV file is and how it is written."""

    path: DataPath = Field(description="The CSV file, relative to the data root or inside it.")
    delimiter: str = Field(
        default=",", min_length=1, max_length=1, description="The one-character field separator."
    )
    has_header: bool = Field(
        default=True,
        description="Whether the first row names the columns; without it they are named "
        "`f0`, `f1`, ...",
    )
    block_size_bytes: int = Field(
        default=4 * MIB,
        ge=1024,
        le=1024 * MIB,
        description="Bytes parsed per batch: bounds memory, and column types are inferred "
        "from the first block.",
    )

    @field_validator("delimiter")
    @classmethod
    def _not_a_row_or_quote_character(cls, value: str) -> str:
        if value in '\r\n"':
            raise ValueError("the delimiter cannot be a newline or the quote character")
        return value


class CsvExtractor(Extractor[CsvConfig]):
    """Stream a CSV file through `pyarrow.csv.open_csv`, one batch per block.

    Column types are pyarrow's inference over the first block, and every later batch is
    converted to those types, so all batches share one schema. A later value that does not
    fit (a word in a column of numbers) is a `PermanentError` that says so. Without a header
    the columns are named `f0`, `f1`, ... (pyarrow's generated names). A file with a header
    and no rows yields no batches.
    """

    config_model = CsvConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        path = ensure_inside(self.config.path, self.context.data_root)
        rows = 0
        with self._open(path) as reader:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except pa.ArrowInvalid as exc:
                    raise _invalid_data(path, rows, self.config.block_size_bytes, exc) from exc
                rows += batch.num_rows
                self.context.report_progress(rows)
                yield batch

    def _open(self, path: Path) -> Any:
        read_options = pacsv.ReadOptions(
            block_size=self.config.block_size_bytes,
            autogenerate_column_names=not self.config.has_header,
        )
        parse_options = pacsv.ParseOptions(delimiter=self.config.delimiter)
        try:
            return pacsv.open_csv(path, read_options=read_options, parse_options=parse_options)
        except FileNotFoundError as exc:
            raise PermanentError(f"{path}: no such file") from exc
        except pa.ArrowInvalid as exc:
            # The first block is parsed on open: its errors surface here.
            raise _invalid_data(path, 0, self.config.block_size_bytes, exc) from exc
        except OSError as exc:
            raise PermanentError(f"{path}: cannot open: {exc}") from exc


def _invalid_data(path: Path, rows: int, block_size: int, exc: Exception) -> PermanentError:
    where = f"in the block after row {rows}" if rows else "in the first block"
    if "conversion error" in str(exc):
        return PermanentError(
            f"{path}: a value does not fit the column type inferred from the first "
            f"{block_size} bytes ({where}): {exc}; raise block_size_bytes so inference sees it, "
            "or clean the column"
        )
    return PermanentError(f"{path}: malformed CSV {where}: {exc}")
