"""``orchestrator demo``: a local simulator and embedded defaults, so the example runs anywhere."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import out, plain
from orchestrator.cli.exit_codes import ExitCode
from orchestrator.sandbox.config import DEMO_API_KEY, SandboxConfig
from orchestrator.sandbox.server import SandboxServer

DEMO_DATA_DIR = Path(".orchestrator/demo")

# A provider that answers in seconds rather than minutes, so the demo ends in under a minute.
DEMO_SANDBOX = SandboxConfig(
    seed=7,
    balance=Decimal("50.00"),
    code_delay=(1.0, 12.0),
    never_ratio=0.3,
    rate_limit=5.0,
    cancel_min_age=8.0,
    expiry=90.0,
)


@contextmanager
def demo_environment() -> Iterator[dict[str, str]]:
    """Serve the simulator for the duration; yield the environment that points at it."""
    for name in ("REDIS_URL", "DATABASE_URL"):
        os.environ.pop(name, None)  # the demo shows the embedded defaults, whatever is set
    with SandboxServer(DEMO_SANDBOX) as server:
        yield {
            "LEGITSMS_BASE_URL": server.url,
            "LEGITSMS_API_KEY": DEMO_API_KEY,
            "ORCHESTRATOR_DATA_DIR": str(DEMO_DATA_DIR),
            "ORCHESTRATOR_RATE_LIMIT": "4",
            "ORCHESTRATOR_POLL_INTERVAL": "2s",
            "ORCHESTRATOR_CANCEL_MIN_AGE": "8s",
            "ORCHESTRATOR_PROVIDER_EXPIRY": "90s",
            "ORCHESTRATOR_EXPIRY_MARGIN": "20s",
            "ORCHESTRATOR_SWEEP_INTERVAL": "10s",
            "ORCHESTRATOR_WORKER_PROCESSES": "2",
        }


def demo(
    ctx: typer.Context,
    export: Annotated[Path, typer.Option("--export", "-o", help="Where to write the CSV.")] = Path(
        "out/example.csv"
    ),
    job_file: Annotated[Path, typer.Option("--job", help="The job to run.")] = Path(
        "jobs/example.yaml"
    ),
) -> None:
    """Run the example job end to end against a local simulator, on the embedded defaults."""
    with demo_environment() as env:
        os.environ.update(env)
        args = ["run", str(job_file), "--export", str(export), "--allow-overlap"]
        code = _invoke(ctx, args)
    if code == ExitCode.INCOMPLETE:
        # The simulator withholds some codes on purpose, to show cancels and refunds.
        plain(out, f"demo done: see {export} (orders without a code were cancelled and refunded)")
        code = ExitCode.OK
    raise typer.Exit(code)


def _invoke(ctx: typer.Context, args: list[str]) -> int:
    """Run another command of this app in-process; its exit code."""
    try:
        result = ctx.find_root().command.main(args, standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    return result if isinstance(result, int) else 0
