"""Hot statements compiled once per database dialect, then run as plain SQL text.

Running a prebuilt Core statement through SQLAlchemy still costs about twice SQLite's own
time on every execution: a walk of the statement for its cache key, a lookup in the compiled
cache and a compiled execution context. Compiled once here, a statement runs through
``exec_driver_sql``: SQLAlchemy still owns the transaction, its events and its error
wrapping, but skips all three. Only statements whose SQL text and parameters are fixed
qualify: one with an expanding ``IN`` (rewritten at every execution), one leaving a column
to a Python-side default or holding a bind whose value is a function (computed at every
execution), or one missing a parameter (refused at every execution) runs the ordinary way.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ClauseElement, Connection, CursorResult, Dialect, Executable
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class _Prepared:
    sql: str
    names: tuple[str, ...]  # bind names in the driver's order (repeated where reused)
    process: tuple[Callable[[Any], Any] | None, ...]  # each name's bind processor
    fixed: Mapping[str, Any]  # values the statement carries itself (literals in a WHERE)
    positional: bool

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        values = []
        for name, process in zip(self.names, self.process, strict=True):
            value = params[name] if name in params else self.fixed[name]
            values.append(value if process is None else process(value))
        return tuple(values) if self.positional else dict(zip(self.names, values, strict=True))


_prepared: dict[tuple[Hashable, str], _Prepared | None] = {}  # None: runs the ordinary way

# Statements are built once per shape, with bound parameters: building and hashing one costs
# more than SQLite spends running it.
_built: dict[Hashable, Executable] = {}


def built(shape: Hashable, build: Callable[[], Executable]) -> Executable:
    """The statement for ``shape``, built by ``build`` on first use."""
    statement = _built.get(shape)
    if statement is None:
        statement = _built.setdefault(shape, build())
    return statement


def execute(
    connection: Connection, shape: Hashable, statement: Executable, params: Mapping[str, Any]
) -> CursorResult[Any]:
    """Run ``statement`` (always the same one for ``shape``) with ``params`` on ``connection``.

    Every call for one shape must pass the same parameter names: they decide which columns
    an INSERT or UPDATE without explicit values sets.
    """
    key = (shape, connection.dialect.name)
    if key not in _prepared:
        _prepared[key] = _prepare(statement, connection.dialect, params.keys())
    prepared = _prepared[key]
    if prepared is None:
        return connection.execute(statement, dict(params))
    return connection.exec_driver_sql(prepared.sql, prepared.args(params))


def _prepare(statement: Executable, dialect: Dialect, keys: Collection[str]) -> _Prepared | None:
    assert isinstance(statement, ClauseElement)
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    assert isinstance(compiled, SQLCompiler)
    if (
        compiled.post_compile_params  # an expanding IN: its SQL is rewritten every time
        or compiled.literal_execute_params
        or compiled.insert_prefetch  # a column default SQLAlchemy computes per execution
        or compiled.update_prefetch
    ):
        return None
    names = tuple(compiled.positiontup or ()) if compiled.positional else tuple(compiled.binds)
    binds = [compiled.binds[name] for name in names]
    for name, bind in zip(names, binds, strict=True):
        if bind.callable is not None or (bind.required and name not in keys):
            return None  # a value computed, or refused, at every execution
    return _Prepared(
        sql=compiled.string,
        names=names,
        process=tuple(bind.type.dialect_impl(dialect).bind_processor(dialect) for bind in binds),
        fixed={
            name: bind.effective_value
            for name, bind in zip(names, binds, strict=True)
            if name not in keys
        },
        positional=compiled.positional,
    )
