"""A small, safe row-filter syntax for configs, turned into pyarrow compute expressions.

A filter is a list of conditions that must all hold, each `[column, op, value]`:

    [["country", "==", "DE"], ["amount", ">=", 10], ["kind", "in", ["a", "b"]],
     ["deleted_at", "is_null"]]

Ops: `==` `!=` `<` `<=` `>` `>=` (a scalar value), `in` `not_in` (a list), `is_null`
`is_not_null` (no value). Values are JSON scalars; each is cast to its column's type when
the data's schema is known (`"2024-01-01"` against a timestamp column works). Nothing is
evaluated as code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BeforeValidator

from common.errors import PermanentError

_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "is_not_null")


def _condition(raw: Any) -> tuple[str, str, Any]:
    if not isinstance(raw, list | tuple) or len(raw) not in (2, 3):
        raise ValueError("a condition is [column, op, value] or [column, is_null|is_not_null]")
    column, op, *rest = raw
    if not isinstance(column, str) or not column:
        raise ValueError("a condition's column is a non-empty string")
    if op == "=":
        op = "=="
    if op not in _OPS:
        raise ValueError(f"unknown op {op!r}; use one of {', '.join(_OPS)}")
    if op in ("is_null", "is_not_null"):
        if rest:
            raise ValueError(f"{op} takes no value")
        return column, op, None
    if not rest:
        raise ValueError(f"{op} needs a value")
    value = rest[0]
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not all(_is_scalar(v) for v in value):
            raise ValueError(f"{op} needs a list of scalar values")
    elif not _is_scalar(value) or value is None:
        raise ValueError(f"{op} needs a scalar value (use is_null for nulls)")
    return column, op, value


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _conditions(raw: Any) -> list[tuple[str, str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("a filter is a list of [column, op, value] conditions")  # noqa: TRY004
    return [_condition(item) for item in raw]


RowFilter = Annotated[list[tuple[str, str, Any]], BeforeValidator(_conditions)]
"""A validated filter: `(column, op, value)` conditions, all of which must hold."""


def _literal(value: Any, type_: pa.DataType | None, column: str) -> pa.Scalar:
    scalar = pa.scalar(value)
    if type_ is None or scalar.type == type_:
        return scalar
    try:
        return scalar.cast(type_)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise PermanentError(f"filter on {column!r}: {value!r} is not a {type_}: {exc}") from exc


def to_expression(
    conditions: Sequence[tuple[str, str, Any]], schema: pa.Schema | None = None
) -> pc.Expression | None:
    """The conditions as one expression (None for no condition). With `schema`, an unknown
    column is a `PermanentError` and values are cast to their column's type."""
    expression: pc.Expression | None = None
    for column, op, value in conditions:
        type_ = None
        if schema is not None:
            if schema.get_field_index(column) < 0:
                raise PermanentError(
                    f"filter on {column!r}: no such column; columns: {', '.join(schema.names)}"
                )
            type_ = schema.field(column).type
        field = pc.field(column)
        if op == "is_null":
            condition = field.is_null()
        elif op == "is_not_null":
            condition = field.is_valid()
        elif op in ("in", "not_in"):
            values = pa.array([_literal(v, type_, column).as_py() for v in value], type=type_)
            condition = field.isin(values)
            if op == "not_in":
                condition = ~condition
        else:
            literal = _literal(value, type_, column)
            condition = {
                "==": field == literal,
                "!=": field != literal,
                "<": field < literal,
                "<=": field <= literal,
                ">": field > literal,
                ">=": field >= literal,
            }[op]
        expression = condition if expression is None else expression & condition
    return expression
