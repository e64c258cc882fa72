"""Arrow data types named in job configs (`"int64"`, `"timestamp[ms, tz=UTC]"`,
`"decimal128(12, 2)"`), parsed without eval."""

from __future__ import annotations

import re
from typing import Annotated

import pyarrow as pa
from pydantic import AfterValidator

_TIMESTAMP = re.compile(r"^timestamp\[(s|ms|us|ns)(?:,\s*tz=([A-Za-z0-9_+\-/:]+))?\]$")
_DECIMAL = re.compile(r"^decimal(128|256)?\((\d+),\s*(-?\d+)\)$")
_SIMPLE = {
    "bool",
    "boolean",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "halffloat",
    "float",
    "double",
    "string",
    "str",
    "utf8",
    "large_string",
    "large_str",
    "binary",
    "large_binary",
    "date32",
    "date64",
    "date32[day]",
    "date64[ms]",
    "time32[s]",
    "time32[ms]",
    "time64[us]",
    "time64[ns]",
    "null",
}


def parse_arrow_type(name: str) -> pa.DataType:
    """The Arrow type a config names; `ValueError` listing the forms accepted."""
    text = name.strip().lower()
    if text in _SIMPLE:
        return pa.type_for_alias(text)
    if match := _TIMESTAMP.match(name.strip()):
        unit, tz = match.groups()
        return pa.timestamp(unit, tz=tz)
    if match := _DECIMAL.match(text):
        width, precision, scale = match.groups()
        factory = pa.decimal256 if width == "256" else pa.decimal128
        try:
            return factory(int(precision), int(scale))
        except ValueError as exc:
            raise ValueError(f"{name!r}: {exc}") from exc
    raise ValueError(
        f"unknown type {name!r}; use one of {', '.join(sorted(_SIMPLE))}, "
        "timestamp[unit] or timestamp[unit, tz=Zone], decimal128(precision, scale)"
    )


def _check(name: str) -> str:
    parse_arrow_type(name)
    return name


ArrowTypeName = Annotated[str, AfterValidator(_check)]
"""A config string that names an Arrow type (`parse_arrow_type` turns it into one)."""
