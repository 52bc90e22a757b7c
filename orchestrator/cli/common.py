"""What every command shares: settings, the one-line failure, the broker, the client."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, NoReturn

import structlog
import typer
from redis import RedisError
from rich.console import Console
from rich.text import Text

from orchestrator.cli.config_view import register_secrets
from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.output import Stdout
from orchestrator.cli.watch import Interrupted
from orchestrator.config import Settings, load_settings, log_level_problem
from orchestrator.db.errors import InterfaceError, OperationalError
from orchestrator.errors import (
    ConfigError,
    DatabaseGone,
    JobNotFound,
    JobOverlap,
    MalformedResponse,
    OrchestratorError,
    OutputRefused,
    ProviderError,
    ProviderRejected,
    SpecError,
)
from orchestrator.jobs.spec import JobLimits, load_job_spec
from orchestrator.jobs.submit import submit_job_file
from orchestrator.lifecycle.nudges import Nudge
from orchestrator.lifecycle.wiring import (
    make_client,
    make_runtime,
    make_shared_prices,
    make_throttle,
)
from orchestrator.logs import configure_logging
from orchestrator.provider.client import LegitSMSClient
from orchestrator.redact import for_terminal
from workers.embedded_broker import EmbeddedBroker, ensure_embedded

if TYPE_CHECKING:
    from workers.metrics_server import MetricsServer

OVERLAP_HELP = "Submit even if a job of the same name is still active."
log = structlog.get_logger(__name__)
out = Stdout()  # tables never cut when piped
err = Console(stderr=True)


@dataclass
class Context:
    """What the global options chose."""

    config: Path | None
    log_level: str | None

    def settings(self) -> Settings:
        settings = load_settings(self.config)
        register_secrets(settings)  # before anything can log, store or print them
        configure_logging(self.log_level or settings.log_level)
        return settings


def context(ctx: typer.Context) -> Context:
    obj = ctx.obj
    assert isinstance(obj, Context)
    return obj


def fail(code: ExitCode, message: str) -> NoReturn:
    # The message quotes the user's file and the provider's names and messages: printed as
    # text (no markup), control characters escaped, secrets masked (for_terminal); never
    # wrapped, for grep and cron mail (a job file's problems keep one line each).
    line = Text.assemble(("error:", "bold red"), " ", for_terminal(message, newlines=True))
    err.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(int(code))


@contextmanager
def guard() -> Iterator[None]:
    """Turn our exceptions into a one-line message and a documented exit code."""
    try:
        yield
    except (SpecError, ConfigError, OutputRefused) as exc:
        fail(ExitCode.BAD_INPUT, str(exc))
    except JobNotFound as exc:
        fail(ExitCode.BAD_INPUT, str(exc))
    except JobOverlap as exc:  # raised only by submit and run, which have the option
        fail(ExitCode.OVERLAP, f"{exc} (use --allow-overlap to run both)")
    except DatabaseGone as exc:  # never "no job": the jobs are in the file that went away
        fail(ExitCode.UNAVAILABLE, str(exc))
    except ProviderRejected as exc:
        fail(ExitCode.UNAVAILABLE, f"the provider refused: {exc}")
    except MalformedResponse as exc:  # it was reached: what it said could not be used
        fail(ExitCode.UNAVAILABLE, f"the provider answered something unusable: {exc}")
    except ProviderError as exc:
        fail(ExitCode.UNAVAILABLE, f"the provider could not be reached: {exc}")
    except OrchestratorError as exc:
        fail(ExitCode.UNAVAILABLE, str(exc))
    # A traceback would exit 1, which cron reads as "the job ended and some numbers got no code".
    except (OperationalError, InterfaceError) as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        fail(ExitCode.UNAVAILABLE, f"the database could not be used: {reason}")
    except RedisError as exc:
        fail(ExitCode.UNAVAILABLE, f"Redis could not be used: {exc}")


@contextmanager
def broker_url(settings: Settings) -> Iterator[str]:
    """The Redis URL to use: REDIS_URL, or the embedded server (started here if needed)."""
    with broker_handle(settings) as (url, _embedded):
        yield url


@contextmanager
def broker_handle(settings: Settings) -> Iterator[tuple[str, EmbeddedBroker | None]]:
    """The Redis URL, and our hold on the embedded server when REDIS_URL is unset: it is
    shut down when we leave only if no other process of the data folder still uses it."""
    embedded: EmbeddedBroker | None = None
    url = settings.redis_url
    if not url:
        embedded = ensure_embedded(settings.data_path)
        url = embedded.url
    os.environ["REDIS_URL"] = url  # read by workers.broker, in this process and in children
    try:
        yield url, embedded
    finally:
        if embedded is not None:
            embedded.release()


def check_job_file(settings: Settings, job_file: Path) -> None:
    """Read and check the job file (``SpecError``: exit 2) before a broker is started for it:
    a bad file must not start the embedded Valkey. What is stored is checked again as read."""
    load_job_spec(job_file, JobLimits.of(settings))


@contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the command as Ctrl-C does: by an exception, so that its ``finally``
    blocks run (the embedded broker is released, never left running); exit 143, one line."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    main = threading.current_thread() is threading.main_thread()  # (in-process tests)
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        yield
    except Interrupted as exc:
        fail(ExitCode.for_signal(exc.signum), "interrupted; nothing was bought")
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def client_for(settings: Settings, redis_url: str) -> LegitSMSClient:
    """A client that waits its turn under the shared rate limit."""
    return make_client(settings, make_throttle(settings, redis_url, patient=True))


def at_least_option(lowest: int) -> Callable[[typer.CallbackParam, int | None], int | None]:
    """An option callback refusing a number below ``lowest`` with one line and exit 2."""

    def check(param: typer.CallbackParam, value: int | None) -> int | None:
        # Not typer's min=: its refusal is a multi-line panel, and cron mail wants one line.
        if value is not None and value < lowest:
            name = param.opts[0] if param.opts else str(param.name)
            fail(ExitCode.BAD_INPUT, f"{name} must be at least {lowest}, got {value}")
        return value

    return check


def check_port(param: typer.CallbackParam, value: int | None) -> int | None:
    """An option callback refusing a TCP port outside 1-65535 with one line and exit 2."""
    if value is not None and not 1 <= value <= 65535:
        name = param.opts[0] if param.opts else str(param.name)
        fail(ExitCode.BAD_INPUT, f"{name} must be a port from 1 to 65535, got {value}")
    return value


MetricsPort = Annotated[
    int | None,
    typer.Option(
        help="Serve Prometheus metrics at /metrics on this port: the workers' (summed over "
        "their processes) and the money gauges read from the database.",
        callback=check_port,
    ),
]
MetricsHost = Annotated[
    str, typer.Option(help="The address --metrics-port listens on (0.0.0.0: every interface).")
]
METRICS_HOST = "127.0.0.1"


@contextmanager
def metrics_served(
    settings: Settings, host: str, port: int | None
) -> Iterator[MetricsServer | None]:
    """A metrics server on ``host:port`` while inside (None without a port)."""
    if port is None:
        yield None
        return
    from workers.metrics_server import MetricsServer

    server = MetricsServer(settings, host=host, port=port)
    try:
        yield server
    finally:
        server.close()


def more_than_zero(param: typer.CallbackParam, value: float) -> float:
    """An option callback refusing seconds that are not more than 0 (one line, exit 2)."""
    if not value > 0:
        name = param.opts[0] if param.opts else str(param.name)
        fail(ExitCode.BAD_INPUT, f"{name} must be more than 0 seconds, got {value:g}")
    return value


def check_log_level(value: str | None) -> str | None:
    if value is not None and (problem := log_level_problem(value)):
        fail(ExitCode.BAD_INPUT, f"--log-level {problem}")
    return value.lower() if value is not None else None


def send_nudges(nudges: list[Nudge]) -> None:
    from workers.actors import send  # late: the broker must be configured first

    send(nudges)


def submit_file(
    settings: Settings,
    job_file: Path,
    redis_url: str,
    *,
    allow_overlap: bool,
    before_commit: Callable[[], None] = lambda: None,
) -> tuple[int, int]:
    """Submit the job file (see jobs.submit), nudging through the broker at ``redis_url``.

    Before the job is committed (nothing of it bought yet), a wallet checkpoint is taken if
    the key is quiet: the start of the job's first audit interval.
    """

    def before() -> None:
        wallet_checkpoint(settings, redis_url, "job_started")
        before_commit()

    return submit_job_file(
        settings,
        job_file,
        open_client=lambda: client_for(settings, redis_url),
        send=send_nudges,
        allow_overlap=allow_overlap,
        before_commit=before,
        shared_prices=make_shared_prices(settings, redis_url),
    )


def wallet_checkpoint(settings: Settings, redis_url: str, reason: str) -> None:
    """Take a wallet checkpoint if the key is quiet now; best effort (the sweep takes more)."""
    from orchestrator.lifecycle import checkpoint

    try:
        taken = checkpoint.take(make_runtime(settings, redis_url, patient=True), reason)
    except (OrchestratorError, RedisError, OperationalError) as exc:  # submitting goes on
        log.warning("wallet_checkpoint_failed", reason=reason, error=str(exc))
        return
    if taken.checkpoint is None:
        log.debug("wallet_checkpoint_put_off", reason=reason, why=taken.why)


def plain(console: Console, text: str) -> None:
    """One line as text: no markup, no highlighting, never wrapped (cron logs are grepped);
    provider text in it (order ids) made safe for a terminal (for_terminal)."""
    console.print(for_terminal(text), highlight=False, markup=False, soft_wrap=True)
