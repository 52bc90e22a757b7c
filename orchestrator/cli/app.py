"""The ``orchestrator`` command: its global options, and every command registered in order."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.audit_view import audit
from orchestrator.cli.catalog import balance, prices, services
from orchestrator.cli.common import (
    Context,
    check_log_level,
)
from orchestrator.cli.config_view import config_command
from orchestrator.cli.db import db_app
from orchestrator.cli.demo import demo
from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.manage import (
    cancel,
    export_command,
    report,
    resolve,
    scheduler,
    status,
    sweep_command,
    worker,
)
from orchestrator.cli.plan_view import plan
from orchestrator.cli.run import run, submit
from orchestrator.cli.sandbox import sandbox_command

app = typer.Typer(
    help="Batch activation orchestrator for the LegitSMS V2 API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Settings file (default: $ORCHESTRATOR_CONFIG or ./config.yaml)."
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            help="debug, info, warning or error (default: the settings').",
            callback=check_log_level,
        ),
    ] = None,
) -> None:
    """Batch activation orchestrator for the LegitSMS V2 API."""
    ctx.obj = Context(config=config, log_level=log_level)


# Registered in the order `--help` lists them.
app.command()(submit)
app.command()(run)
app.command()(plan)
app.command()(scheduler)
app.command()(worker)
app.command()(status)
app.command("export")(export_command)
app.command()(report)
app.command()(cancel)
app.command("sweep")(sweep_command)
app.command()(resolve)
app.command()(audit)
app.command()(balance)
app.command()(services)
app.command()(prices)
app.command()(demo)


app.command("sandbox", help="Serve the LegitSMS API simulator (for demos and tests).")(
    sandbox_command
)
app.command("config")(config_command)

app.add_typer(db_app, name="db")


def main() -> None:
    """Entry point of the ``orchestrator`` command."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(int(ExitCode.INTERRUPTED))
