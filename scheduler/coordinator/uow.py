"""A unit of work: one transaction's rows, and the events to publish once it commits.

The coordinator's transactions are its hot path, so they bypass the ORM's session: rows
are read with Core statements (a batch's in a few `IN (...)` queries, see `scheduler.
coordinator.preload`) into instances of the mapped classes that no session tracks, and
`flush()` writes what changed as one executemany per table and set of columns. The
handlers read and assign attributes as usual; they must assign a new value rather than
mutate one in place (a changed value is found by comparing it with the value read).
"""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, ColumnElement, Connection, Table, bindparam, insert, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import configure_mappers

from common.bus import Outgoing
from common.db.models import Base, JobState, table_of
from common.events import Event, StateChanged, StateChanges, utcnow
from common.states import TaskType
from common.tracing import trace_headers

ConfigSealer = Callable[[TaskType, str, dict[str, Any]], dict[str, Any]]
M = TypeVar("M", bound=Base)

_TABLE_ORDER = {table: i for i, table in enumerate(Base.metadata.sorted_tables)}
"""Parents before children, so new rows are inserted in an order their keys accept."""


def _as_is(task_type: TaskType, plugin: str, config: dict[str, Any]) -> dict[str, Any]:
    return config


@dataclass
class UnitOfWork:
    conn: Connection
    now: datetime = field(default_factory=utcnow)
    outbox: list[Outgoing] = field(default_factory=list)
    seal: ConfigSealer = _as_is
    """Turns a plugin config into what may ride the bus (secret values encrypted)."""
    load_after_extract: bool = False
    """Extracts are dispatched with their load (`TaskDispatched.then`)."""
    absent: set[tuple[type[Base], Any]] = field(default_factory=set)
    """Keys the preload looked for and did not find: `get()` answers None without a query."""
    locked_runs: set[uuid.UUID] = field(default_factory=set)
    """Runs the preload read `FOR UPDATE` (in id order, so batches cannot deadlock)."""
    job_states: dict[uuid.UUID, dict[str, JobState]] = field(default_factory=dict)
    _rows: dict[tuple[type[Base], Any], Base] = field(default_factory=dict)
    _read: dict[int, tuple[Base, dict[str, Any]]] = field(default_factory=dict)
    """Rows read from the store, with their values as read (by `id()` of the row)."""
    _new: list[Base] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Bare instances (`_bare`) need the mappers configured, which the ORM does only
        # on first use of a session or query; a coordinator alone never makes either.
        configure_mappers()

    def emit(
        self, event: Event, routing_key: str | None = None, delay_rung: int | None = None
    ) -> None:
        self.outbox.append(Outgoing(event, routing_key, delay_rung, trace_headers()))

    def to_publish(self) -> list[Outgoing]:
        """What was emitted, its `StateChanged` notices folded into one `StateChanges`
        where the first of them was (before any `RunFinished`, as a live view expects)."""
        changes = [o.event for o in self.outbox if isinstance(o.event, StateChanged)]
        if not changes:
            return list(self.outbox)
        result: list[Outgoing] = []
        for o in self.outbox:
            if not isinstance(o.event, StateChanged):
                result.append(o)
            elif o.event is changes[0]:
                result.append(Outgoing(StateChanges(changes=tuple(changes)), headers=o.headers))
        return result

    # Reading

    def select(
        self,
        model: type[M],
        *where: ColumnElement[bool],
        for_update: bool = False,
        refresh: bool = False,
    ) -> list[M]:
        """Rows of `model` matching `where`. A row this unit already holds is returned as
        held (its unflushed changes kept), or overwritten with what was read (`refresh`)."""
        statement = select(table_of(model)).where(*where)
        if for_update:
            statement = statement.with_for_update()
        return self.load(model, self.conn.execute(statement).mappings(), refresh=refresh)

    def load(self, model: type[M], rows: Iterable[Any], refresh: bool = False) -> list[M]:
        """Instances of `model` for rows read (mappings of column values), held by key."""
        table = table_of(model)
        result: list[M] = []
        for values in rows:
            values = dict(values)
            key = _key_of_values(table, values)
            held = self._rows.get((model, key))
            if held is not None:
                if refresh:
                    held.__dict__.update(values)
                    self._read[id(held)] = (held, values)
                assert isinstance(held, model)
                result.append(held)
                continue
            row = _bare(model, values)
            self._rows[(model, key)] = row
            self._read[id(row)] = (row, values)
            self.absent.discard((model, key))
            result.append(row)
        return result

    def get(self, model: type[M], key: Any) -> M | None:
        """The row with this primary key: added in this unit, preloaded, or read now."""
        row = self._rows.get((model, key))
        if row is not None:
            assert isinstance(row, model)
            return row
        if (model, key) in self.absent:
            return None
        (pk,) = table_of(model).primary_key.columns
        found = self.select(model, pk == key)
        return found[0] if found else None

    def job_state(self, job_id: uuid.UUID) -> dict[str, JobState]:
        """The job's remembered keys (incremental cursors), rows included for updating."""
        rows = self.job_states.get(job_id)
        if rows is None:
            found = self.select(JobState, JobState.job_definition_id == job_id)
            rows = {row.key: row for row in found}
            self.job_states[job_id] = rows
        return rows

    # Writing

    def new(self, model: type[M], **values: Any) -> M:
        """A new row, inserted at the flush; `get(model, key)` finds it before that."""
        table = table_of(model)
        # Columns without a default are NULL unless given: holding the None makes reading
        # them a dict lookup instead of the ORM's much slower path for a missing value.
        row = _bare(model, {**dict.fromkeys(_plain_columns(table)), **values})
        key = _key_of_values(table, values)
        self._new.append(row)
        self._rows[(model, key)] = row
        self.absent.discard((model, key))
        return row

    def flush(self) -> None:
        """Write the new rows and the changed columns of the rows read."""
        inserts: dict[tuple[Table, frozenset[str]], list[dict[str, Any]]] = defaultdict(list)
        for row in self._new:
            table = table_of(type(row))
            now = row.__dict__
            new = {k: now[k] for k in _columns(table) if k in now}
            inserts[(table, frozenset(new))].append(new)
            self._read[id(row)] = (row, new)
        self._new.clear()
        for (table, _), rows in sorted(inserts.items(), key=lambda kv: _TABLE_ORDER[kv[0][0]]):
            self.conn.execute(insert(table), rows)
        updates: dict[tuple[Table, tuple[str, ...]], list[dict[str, Any]]] = defaultdict(list)
        for row, read in self._read.values():
            table = table_of(type(row))
            now = row.__dict__
            changed = tuple(k for k in _columns(table) if k in now and now[k] != read.get(k))
            if not changed:
                continue
            values = {f"_set_{k}": now[k] for k in changed}
            values.update({f"_pk_{k}": now[k] for k in _key_columns(table)})
            updates[(table, changed)].append(values)
            read.update({k: now[k] for k in changed})
        for (table, columns), batch in updates.items():
            self.conn.execute(_update_statement(table, columns), batch)

    def forget(self) -> None:
        """Drop what this unit knows of rows (after a savepoint rolled some back)."""
        self._rows.clear()
        self._read.clear()
        self._new.clear()
        self.absent.clear()
        self.locked_runs.clear()
        self.job_states.clear()


def _bare(model: type[M], values: dict[str, Any]) -> M:
    """An instance of `model` holding `values`, that no session tracks. Filled in directly:
    the mapped constructor costs ten times as much, replaying every value through the
    ORM's attribute events."""
    row = _class_manager(model).new_instance()
    assert isinstance(row, model)
    row.__dict__.update(values)
    return row


@functools.cache
def _class_manager(model: type[Base]) -> Any:
    return sa_inspect(model).class_manager


# A table's column collections are slow to iterate (a list is built per iteration), and
# a flush walks them for every row it holds: their keys are read once per table.
@functools.cache
def _columns(table: Table) -> tuple[str, ...]:
    return tuple(c.key for c in table.columns)


@functools.cache
def _plain_columns(table: Table) -> tuple[str, ...]:
    """Nullable columns with no default of any kind: NULL in a row inserted without them.
    (Not JSON ones: an explicit None there is stored as JSON `null`, not as NULL.)"""
    return tuple(
        c.key
        for c in table.columns
        if c.nullable
        and not c.primary_key
        and not isinstance(c.type, JSON)
        and c.default is None
        and c.server_default is None
        and c.onupdate is None
        and c.server_onupdate is None
    )


@functools.cache
def _key_columns(table: Table) -> tuple[str, ...]:
    return tuple(c.key for c in table.primary_key.columns)


def _key_of_values(table: Table, values: dict[str, Any]) -> Any:
    """The row's primary key: one value, or a tuple for a composite key."""
    keys = _key_columns(table)
    if len(keys) == 1:
        return values[keys[0]]
    return tuple(values[k] for k in keys)


@functools.cache
def _update_statement(table: Table, columns: tuple[str, ...]) -> Any:
    """`UPDATE table SET columns... WHERE key = ...`, built once per table and columns."""
    return (
        update(table)
        .where(*(c == bindparam(f"_pk_{c.key}") for c in table.primary_key.columns))
        .values({k: bindparam(f"_set_{k}") for k in columns})
    )
