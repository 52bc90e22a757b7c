"""Alembic migrations run from code: bring a database to the newest schema, once, under a lock.

There is no ``alembic.ini``: the configuration is built here and points at the ``migrations``
folder inside this package, so an installed wheel migrates the same way a checkout does.
A developer writes a new revision with ``scripts/new_migration.py``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

from orchestrator.db import models
from orchestrator.errors import OrchestratorError

MIGRATIONS = Path(__file__).with_name("migrations")
# The schema ``metadata.create_all`` made before there were migrations: a database without a
# version table but with our tables is adopted at this revision (or at head, if it matches).
BASELINE = "0001"
# pg_advisory_xact_lock key shared by every process migrating one PostgreSQL database.
PG_LOCK_KEY = int.from_bytes(b"orchmigr")
# alembic's ``context`` and ``op`` are module globals: one migration at a time per process.
_alembic_lock = threading.Lock()

log = structlog.get_logger(__name__)


def render_item(type_: str, obj: Any, _autogen_context: AutogenContext) -> str | Literal[False]:
    """How autogenerate writes our column types, so revisions never import ``orchestrator``."""
    if type_ != "type":
        return False
    if isinstance(obj, models.UTCDateTime):
        return "sa.DateTime()"  # the zone is handled in Python; the column is a plain timestamp
    if isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    if isinstance(obj, sa.Enum) and not obj.native_enum and not obj.create_constraint:
        # A non-native enum without a CHECK is a VARCHAR: the values are Python's business, and
        # a list frozen into a migration would only mislead once a state is added.
        return f"sa.String(length={obj.length})"
    return False


def context_options(dialect_name: str) -> dict[str, Any]:
    """Options for alembic's MigrationContext, shared by ``env.py`` and ``check_schema``."""
    return {
        "compare_type": True,
        # SQLite alters a table by copying it; batch mode writes revisions that way.
        "render_as_batch": dialect_name == "sqlite",
        "render_item": render_item,
    }


def alembic_config(connection: Connection) -> Config:
    """An alembic Config, built in code, that migrates through ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    # The revisions cannot change under a running process; parse them once.
    return ScriptDirectory(str(MIGRATIONS))


def head_revision() -> str:
    """The newest revision this code knows."""
    head = _script().get_current_head()
    assert head is not None
    return head


def _known_revisions() -> set[str]:
    return {script.revision for script in _script().walk_revisions()}


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None when it has never been migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision (idempotent; safe from many processes at once).

    A database made by ``create_all`` before migrations existed is adopted, not re-created.
    ``engine`` comes from ``make_engine``: on SQLite, its BEGIN IMMEDIATE is what makes the
    upgrade one transaction and keeps other migrators out until it ends.
    """
    head = head_revision()
    if current_revision(engine) == head:  # the usual case: no lock, no alembic environment
        return
    with _migrating(engine) as conn:
        context = MigrationContext.configure(conn, opts=context_options(conn.dialect.name))
        current = context.get_current_revision()
        if current is None and _has_tables(conn):
            current = _adopt(conn, context)
        if current == head:  # another process migrated while we waited for the lock
            return
        if current is not None and current not in _known_revisions():
            raise OrchestratorError(
                f"the database is at schema revision {current!r}, which this version of the "
                "orchestrator does not know (a newer version migrated it); upgrade the orchestrator"
            )
        with _alembic_lock:
            command.upgrade(alembic_config(conn), "head")
        if current is None:  # a new database: what create_all did, silently, before
            log.debug("database_created", revision=head)
        else:
            log.info("database_migrated", from_revision=current, to_revision=head)


def check_schema(engine: Engine) -> list[str]:
    """How the database differs from the models, one line per difference; empty when in sync."""
    with engine.connect() as conn:
        return _differences(conn)


def _differences(conn: Connection) -> list[str]:
    context = MigrationContext.configure(conn, opts=context_options(conn.dialect.name))
    return [_describe(diff) for diff in compare_metadata(context, SQLModel.metadata)]


def _describe(diff: Any) -> str:
    if isinstance(diff, list):  # the changes to one column come grouped
        return "; ".join(_describe(part) for part in diff)
    kind, *args = diff
    if kind.startswith("modify_"):  # (schema, table, column, existing, old, new)
        return f"{kind} {args[1]}.{args[2]}: {args[4]} -> {args[5]}"
    if kind in {"add_column", "remove_column"}:  # (schema, table, column)
        return f"{kind} {args[1]}.{args[2].name}"
    names = [_name(arg) for arg in args if arg is not None]
    return " ".join([kind, *names])


def _name(item: Any) -> str:
    if isinstance(item, sa.Table):
        return item.name
    if isinstance(item, sa.Column):
        return f"{item.table.name}.{item.name}"
    if isinstance(item, sa.Index | sa.Constraint):
        table = getattr(item, "table", None)
        columns = ", ".join(column.name for column in getattr(item, "columns", []))
        where = f"{table.name}({columns})" if table is not None else f"({columns})"
        return f"{item.name or 'unnamed'} on {where}"
    return str(item)


def _has_tables(conn: Connection) -> bool:
    return bool(set(sa.inspect(conn).get_table_names()) & set(SQLModel.metadata.tables))


def _adopt(conn: Connection, context: MigrationContext) -> str:
    # Tables but no version table: ``create_all`` made them. If they already match the models
    # they are at head; otherwise they are the baseline, and the newer revisions bring them up.
    revision = head_revision() if not _differences(conn) else BASELINE
    context.stamp(_script(), revision)
    log.info("database_adopted", revision=revision)
    return revision


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction that no other migrator can enter until it ends."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # Batch mode rebuilds a table by copy, drop and rename; with enforcement on, the
            # drop of a referenced table fails. The pragma is a no-op inside a transaction.
            _sqlite_pragma(conn, "foreign_keys=OFF")
        try:
            with conn.begin():  # SQLite: BEGIN IMMEDIATE (make_engine), which serializes us
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY}
                    )
                yield conn
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise RuntimeError("a migration left rows whose foreign keys point nowhere")
        finally:
            if sqlite and not conn.invalidated:
                _sqlite_pragma(conn, "foreign_keys=ON")  # the connection goes back to the pool


def _sqlite_pragma(conn: Connection, pragma: str) -> None:
    # On the driver's connection: through SQLAlchemy, the statement would open a transaction.
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute(f"PRAGMA {pragma}")
