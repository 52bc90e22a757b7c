"""The ``orchestrator`` command: its global options, and every command registered in order."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.catalog import balance, prices, services
from orchestrator.cli.common import (
    Context,
    _check_log_level,
    out,
)
from orchestrator.cli.config_view import config_command
from orchestrator.cli.db import db_app
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
from orchestrator.cli.run import _plain, run, submit
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
            callback=_check_log_level,
        ),
    ] = None,
) -> None:
    """Batch activation orchestrator for the LegitSMS V2 API."""
    ctx.obj = Context(config=config, log_level=log_level)


# Registered in the order `--help` lists them.
app.command()(submit)
app.command()(run)
app.command()(scheduler)
app.command()(worker)
app.command()(status)
app.command("export")(export_command)
app.command()(report)
app.command()(cancel)
app.command("sweep")(sweep_command)
app.command()(resolve)
app.command()(balance)
app.command()(services)
app.command()(prices)


@app.command()
def demo(
    export: Annotated[Path, typer.Option("--export", "-o", help="Where to write the CSV.")] = Path(
        "out/example.csv"
    ),
    job_file: Annotated[Path, typer.Option("--job", help="The job to run.")] = Path(
        "jobs/example.yaml"
    ),
) -> None:
    """Run the example job end to end against a local simulator, on the embedded defaults."""
    from orchestrator.cli.demo import demo_environment

    with demo_environment() as env:
        os.environ.update(env)
        args = ["run", str(job_file), "--export", str(export), "--allow-overlap"]
        code = _invoke(args)
    if code == ExitCode.INCOMPLETE:
        # The simulator withholds some codes on purpose, to show cancels and refunds.
        _plain(out, f"demo done: see {export} (orders without a code were cancelled and refunded)")
        code = ExitCode.OK
    raise typer.Exit(code)


def _invoke(args: list[str]) -> int:
    """Run another command of this app in-process; its exit code."""
    try:
        result = app(args, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    return result if isinstance(result, int) else 0


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
