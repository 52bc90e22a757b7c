"""``orchestrator db``: migrate the schema, or see where it stands."""

from __future__ import annotations

import typer

from orchestrator.cli.common import (
    context,
    guard,
    out,
)
from orchestrator.cli.help_style import Command, Group

db_app = typer.Typer(
    help="The database schema: migrate it, or see where it stands.",
    no_args_is_help=True,
    cls=Group,
)


@db_app.command("upgrade", cls=Command)
def db_upgrade(ctx: typer.Context) -> None:
    """Migrate the database to the newest schema (every command also does this on first use)."""
    from orchestrator.db import migrate
    from orchestrator.db.engine import make_engine

    with guard():
        engine = make_engine(context(ctx).settings().effective_database_url)
        try:
            before = migrate.current_revision(engine)
            migrate.upgrade(engine)
            after = migrate.current_revision(engine)
        finally:
            engine.dispose()
    change = "up to date" if before == after else f"migrated from {before or 'empty'}"
    out.print(f"database at revision {after} ({change})", highlight=False)


@db_app.command("current", cls=Command)
def db_current(ctx: typer.Context) -> None:
    """Show the database's schema revision, the newest one, and any difference from the models."""
    from orchestrator.db import migrate
    from orchestrator.db.engine import make_engine

    with guard():
        engine = make_engine(context(ctx).settings().effective_database_url)
        try:
            revision = migrate.current_revision(engine)
            differences = migrate.check_schema(engine) if revision else []
        finally:
            engine.dispose()
    head = migrate.head_revision()
    state = "up to date" if revision == head else "run `orchestrator db upgrade`"
    out.print(f"database at revision {revision or 'none'}, newest {head}: {state}", highlight=False)
    for difference in differences:
        out.print(f"  differs from the models: {difference}", highlight=False, soft_wrap=True)
