"""Alembic's environment: runs the migrations on the connection ``db.migrate`` locked."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

from orchestrator.db.migrate import context_options


def run_migrations() -> None:
    """Migrate through the caller's connection, inside the caller's transaction."""
    connection: Connection | None = context.config.attributes.get("connection")
    if connection is None:
        # Our own engine is what takes SQLite's write lock (BEGIN IMMEDIATE) and sets its
        # pragmas; an engine built here from a URL would migrate without them.
        raise RuntimeError(
            "run migrations through orchestrator.db.migrate (orchestrator db upgrade)"
        )
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        **context_options(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
