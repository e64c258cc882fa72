"""Extract CSV files as a stream of Arrow record batches, in bounded memory."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
from pydantic import Field, field_validator, model_validator

from common.errors import PermanentError
from plugins.arrow_types import ArrowTypeName, parse_arrow_type
from plugins.base import Extractor, PluginConfig
from plugins.paths import DataPath, expand_files

MIB = 1024 * 1024

_EXTENSION_CODECS = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd", ".bz2": "bz2"}
_ROW = re.compile(r"Row #(\d+)")
_COLUMN = re.compile(r"In CSV column #(\d+)")


class CsvConfig(PluginConfig):
    """Where the CSV files are and how they are written.

    Example: `{"path": "sales/*.csv.gz", "delimiter": ";", "column_types": {"id": "int64"}}`.
    """

    path: DataPath = Field(
        description="A CSV file, or a glob of several (`in/*.csv`, `in/**/*.csv.gz`), "
        "relative to the data root or inside it. Files are read in sorted order."
    )
    delimiter: str = Field(
        default=",", min_length=1, max_length=1, description="The one-character field separator."
    )
    has_header: bool = Field(
        default=True,
        description="Whether the first row names the columns; without it they are named "
        "by `column_names`, or `f0`, `f1`, ...",
    )
    column_names: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Names of the columns, for files without a header row.",
    )
    quote_char: str | None = Field(
        default='"',
        min_length=1,
        max_length=1,
        description="The character that quotes a field; null: fields are never quoted.",
    )
    double_quote: bool = Field(
        default=True, description='Whether `""` inside a quoted field stands for one `"`.'
    )
    escape_char: str | None = Field(
        default=None,
        min_length=1,
        max_length=1,
        description="A character that escapes the next one (`\\`); null: no escaping.",
    )
    newlines_in_values: bool = Field(
        default=False,
        description="Whether quoted fields may hold line breaks (slower to parse).",
    )
    column_types: dict[str, ArrowTypeName] = Field(
        default_factory=dict,
        description="Arrow types of chosen columns (`int64`, `float64`, `string`, `bool`, "
        "`date32`, `timestamp[s]`, `timestamp[ms, tz=UTC]`, `decimal128(12, 2)`); the "
        "others are inferred from the first block.",
    )
    null_values: list[str] | None = Field(
        default=None,
        description="Texts read as null (default: pyarrow's: empty, `NULL`, `NA`, ...).",
    )
    compression: Literal["auto", "none", "gzip", "zstd", "bz2"] = Field(
        default="auto",
        description="`auto` decompresses by extension: `.gz`, `.zst`, `.bz2`.",
    )
    encoding: str = Field(default="utf8", description="Text encoding of the files.")
    block_size_bytes: int = Field(
        default=4 * MIB,
        ge=1024,
        le=1024 * MIB,
        description="Bytes parsed per batch: bounds memory, and column types are inferred "
        "from the first block.",
    )

    @field_validator("delimiter", "quote_char", "escape_char")
    @classmethod
    def _not_a_row_break(cls, value: str | None) -> str | None:
        if value is not None and value in "\r\n":
            raise ValueError("cannot be a line break")
        return value

    @model_validator(mode="after")
    def _characters_differ(self) -> CsvConfig:
        special = [c for c in (self.delimiter, self.quote_char, self.escape_char) if c]
        if len(special) != len(set(special)):
            raise ValueError("delimiter, quote_char and escape_char must differ")
        if self.column_names is not None and len(set(self.column_names)) != len(self.column_names):
            raise ValueError("column_names must be unique")
        return self


class CsvExtractor(Extractor[CsvConfig]):
    """Stream CSV files through `pyarrow.csv.open_csv`, one batch per block.

    Column types are the ones given, else pyarrow's inference over the first block of the
    first file; later files of a glob keep the types of the columns they share with it, so
    batches agree. A later value that does not fit (a word in a column of numbers) is a
    `PermanentError` naming the file, row and column; so is a malformed row. A file with a
    header and no rows yields no batches.
    """

    config_model = CsvConfig

    def extract(self) -> Iterator[pa.RecordBatch]:
        files = expand_files(self.config.path, self.context.data_root)
        given = {name: parse_arrow_type(t) for name, t in self.config.column_types.items()}
        seen: dict[str, tuple[pa.DataType, Path]] = {}
        rows = 0
        for path in files:
            with self._open(path, given) as reader:
                _check_agrees(path, reader.schema, seen)
                while True:
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        break
                    except pa.ArrowInvalid as exc:
                        raise _invalid_data(path, reader.schema, exc, self.config) from exc
                    rows += batch.num_rows
                    self.context.report_progress(rows)
                    yield batch

    def _open(self, path: Path, types: dict[str, pa.DataType]) -> Any:
        config = self.config
        read_options = pacsv.ReadOptions(
            block_size=config.block_size_bytes,
            autogenerate_column_names=not config.has_header and config.column_names is None,
            column_names=config.column_names,
            skip_rows=1 if config.has_header and config.column_names else 0,
            encoding=config.encoding,
            # One thread: no slower on a worker's few cores, and errors then carry row numbers.
            use_threads=False,
        )
        parse_options = pacsv.ParseOptions(
            delimiter=config.delimiter,
            quote_char=config.quote_char or False,
            double_quote=config.double_quote,
            escape_char=config.escape_char or False,
            newlines_in_values=config.newlines_in_values,
        )
        convert_options = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
        if config.null_values is not None:
            convert_options.null_values = config.null_values
        try:
            stream = pa.input_stream(str(path), compression=_codec(path, config.compression))
        except FileNotFoundError as exc:
            raise PermanentError(f"{path}: no such file") from exc
        except (OSError, pa.ArrowInvalid) as exc:
            raise PermanentError(f"{path}: cannot open: {exc}") from exc
        try:
            return pacsv.open_csv(
                stream,
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
        except pa.ArrowInvalid as exc:
            # The first block is parsed on open: its errors surface here.
            stream.close()
            raise _invalid_data(path, self._header(path), exc, config) from exc
        except (OSError, LookupError) as exc:
            stream.close()
            raise PermanentError(f"{path}: cannot read: {exc}") from exc

    def _header(self, path: Path) -> pa.Schema | None:
        """The column names (as a schema of strings) when the reader could not say them."""
        config = self.config
        names = config.column_names
        if names is None and config.has_header:
            try:
                with pa.input_stream(str(path), compression=_codec(path, config.compression)) as f:
                    head = f.read(64 * 1024).decode(config.encoding, errors="replace")
            except (OSError, pa.ArrowInvalid, LookupError):
                return None
            rows = csv.reader(
                io.StringIO(head), delimiter=config.delimiter, quotechar=config.quote_char or '"'
            )
            names = next(rows, None)
        if not names:
            return None
        return pa.schema([(name, pa.string()) for name in names])


def _check_agrees(path: Path, schema: pa.Schema, seen: dict[str, tuple[pa.DataType, Path]]) -> None:
    """Files of a glob may type a column differently as long as the types widen into one
    (int and float); text in one file and numbers in another is an error naming both."""
    for field in schema:
        if field.name not in seen:
            seen[field.name] = (field.type, path)
            continue
        earlier, first = seen[field.name]
        try:
            pa.unify_schemas(
                [pa.schema([(field.name, earlier)]), pa.schema([field])],
                promote_options="permissive",
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise PermanentError(
                f"{path}: column {field.name!r} reads as {field.type} here but as {earlier} "
                f"in {first}; give its type in column_types"
            ) from None


def _codec(path: Path, compression: str) -> str | None:
    if compression == "none":
        return None
    if compression != "auto":
        return compression
    return _EXTENSION_CODECS.get(path.suffix.lower())


def _invalid_data(
    path: Path, schema: pa.Schema | None, exc: Exception, config: CsvConfig
) -> PermanentError:
    text = str(exc)
    where = [f"row {m.group(1)}"] if (m := _ROW.search(text)) else []
    if (m := _COLUMN.search(text)) is not None:
        index = int(m.group(1))
        name = schema.names[index] if schema is not None and index < len(schema) else None
        where.append(f"column {name!r}" if name else f"column #{index}")
    at = f" at {', '.join(where)}" if where else ""
    if "conversion error" in text:
        hint = (
            "give the column's type in column_types"
            if schema is not None and not config.column_types
            else "clean the column or change its type in column_types"
        )
        return PermanentError(f"{path}{at}: a value does not fit the column's type: {text}; {hint}")
    if "Empty CSV file" in text:
        return PermanentError(f"{path}: the file is empty (no header row)")
    return PermanentError(f"{path}{at}: malformed CSV: {text}")
