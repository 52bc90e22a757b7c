"""The ``orchestrator`` command: submit, run, watch, export and settle batches of activations."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from redis import RedisError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.cli.config_view import config_command, register_secrets
from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.jobrun import (
    BrokerWatch,
    Interrupted,
    Leave,
    Progress,
    Signals,
    finishing_line,
    leftover_lines,
    open_orders,
    wait_for_job,
)
from orchestrator.cli.progress_bar import say_to
from orchestrator.cli.sandbox import sandbox_command
from orchestrator.config import Settings, load_settings, log_level_problem
from orchestrator.db import store
from orchestrator.db.engine import transaction
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
from orchestrator.jobs.export import ExportFormat, write_rows
from orchestrator.jobs.export_path import PathTemplate, TemplateError
from orchestrator.jobs.export_select import Selection, SelectionError, parse_day, select_jobs
from orchestrator.jobs.output_file import output_target, write_atomically
from orchestrator.jobs.spec import JobLimits
from orchestrator.jobs.submit import submit_job_file
from orchestrator.lifecycle.nudges import Nudge
from orchestrator.lifecycle.wiring import make_client, make_database, make_runtime, make_throttle
from orchestrator.logs import at_least, configure_logging
from orchestrator.provider.client import LegitSMSClient
from orchestrator.redact import for_terminal
from workers.embedded import BrokerLost, EmbeddedBroker, ensure_embedded
from workers.runner import LocalWorkers, child_env

app = typer.Typer(
    help="Batch activation orchestrator for the LegitSMS V2 API.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
OVERLAP_HELP = "Submit even if a job of the same name is still active."
out = Console()
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


def _ctx(ctx: typer.Context) -> Context:
    obj = ctx.obj
    assert isinstance(obj, Context)
    return obj


def _fail(code: ExitCode, message: str) -> NoReturn:
    # The message quotes the user's file and the provider's names and messages: printed as
    # text (no markup), control characters escaped, secrets masked (for_terminal); never
    # wrapped, for grep and cron mail (a job file's problems keep one line each).
    line = Text.assemble(("error:", "bold red"), " ", for_terminal(message, newlines=True))
    err.print(line, highlight=False, soft_wrap=True)
    raise typer.Exit(int(code))


@contextmanager
def _guard() -> Iterator[None]:
    """Turn our exceptions into a one-line message and a documented exit code."""
    try:
        yield
    except (SpecError, ConfigError, OutputRefused) as exc:
        _fail(ExitCode.BAD_INPUT, str(exc))
    except JobNotFound as exc:
        _fail(ExitCode.BAD_INPUT, str(exc))
    except JobOverlap as exc:
        _fail(ExitCode.OVERLAP, str(exc))
    except DatabaseGone as exc:  # never "no job": the jobs are in the file that went away
        _fail(ExitCode.UNAVAILABLE, str(exc))
    except ProviderRejected as exc:
        _fail(ExitCode.UNAVAILABLE, f"the provider refused: {exc}")
    except MalformedResponse as exc:  # it was reached: what it said could not be used
        _fail(ExitCode.UNAVAILABLE, f"the provider answered something unusable: {exc}")
    except ProviderError as exc:
        _fail(ExitCode.UNAVAILABLE, f"the provider could not be reached: {exc}")
    except OrchestratorError as exc:
        _fail(ExitCode.UNAVAILABLE, str(exc))
    # A traceback would exit 1, which cron reads as "the job ended and some numbers got no code".
    except (OperationalError, InterfaceError) as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        _fail(ExitCode.UNAVAILABLE, f"the database could not be used: {reason}")
    except RedisError as exc:
        _fail(ExitCode.UNAVAILABLE, f"Redis could not be used: {exc}")


@contextmanager
def _broker(settings: Settings) -> Iterator[str]:
    """The Redis URL to use: REDIS_URL, or the embedded server (started here if needed)."""
    with _broker_handle(settings) as (url, _embedded):
        yield url


@contextmanager
def _broker_handle(settings: Settings) -> Iterator[tuple[str, EmbeddedBroker | None]]:
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


def _client(settings: Settings, redis_url: str) -> LegitSMSClient:
    """A client that waits its turn under the shared rate limit."""
    return make_client(settings, make_throttle(settings, redis_url, patient=True))


def _at_least(lowest: int) -> Callable[[typer.CallbackParam, int | None], int | None]:
    """An option callback refusing a number below ``lowest`` with one line and exit 2."""

    def check(param: typer.CallbackParam, value: int | None) -> int | None:
        # Not typer's min=: its refusal is a multi-line panel, and cron mail wants one line.
        if value is not None and value < lowest:
            name = param.opts[0] if param.opts else str(param.name)
            _fail(ExitCode.BAD_INPUT, f"{name} must be at least {lowest}, got {value}")
        return value

    return check


def _check_log_level(value: str | None) -> str | None:
    if value is not None and (problem := log_level_problem(value)):
        _fail(ExitCode.BAD_INPUT, f"--log-level {problem}")
    return value.lower() if value is not None else None


def _send(nudges: list[Nudge]) -> None:
    from workers.actors import send  # late: the broker must be configured first

    send(nudges)


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


def _submit(
    settings: Settings,
    job_file: Path,
    redis_url: str,
    *,
    allow_overlap: bool,
    before_commit: Callable[[], None] = lambda: None,
) -> tuple[int, int]:
    """Submit the job file (see jobs.submit), nudging through the broker at ``redis_url``."""
    return submit_job_file(
        settings,
        job_file,
        open_client=lambda: _client(settings, redis_url),
        send=_send,
        allow_overlap=allow_overlap,
        before_commit=before_commit,
    )


@app.command()
def submit(
    ctx: typer.Context,
    job_file: Annotated[Path, typer.Argument(help="The job's YAML file.")],
    allow_overlap: Annotated[bool, typer.Option(help=OVERLAP_HELP)] = False,
) -> None:
    """Put a job on the queue for the workers (see `worker`), and print its id."""
    with _guard():
        settings = _ctx(ctx).settings()
        with _broker(settings) as url:
            job_id, slots = _submit(settings, job_file, url, allow_overlap=allow_overlap)
    out.print(f"submitted job {job_id} ({slots} numbers)")


@app.command()
def run(
    ctx: typer.Context,
    job_file: Annotated[Path, typer.Argument(help="The job's YAML file.")],
    export: Annotated[
        str | None,
        typer.Option(
            "--export",
            "-o",
            help="Write the job's rows here when it ends: CSV, or JSON lines for *.jsonl. "
            "{name}, {job_id}, {date} (YYYY-MM-DD) and {time} (HHMMSS) are filled in, "
            "from the job's submission in UTC.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Local worker processes to start (0 or more); 0 when workers run elsewhere.",
            callback=_at_least(0),
        ),
    ] = None,
    allow_overlap: Annotated[bool, typer.Option(help=OVERLAP_HELP)] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Print only errors and the final summary line (logs: warnings and errors).",
        ),
    ] = False,
) -> None:
    """Submit a job, work it with local workers, wait until every number ended, export.

    Ctrl-C or SIGTERM stops the buying and finishes the orders bought (codes read, code-less
    ones cancelled as soon as the provider allows), exports, and exits 130 / 143; a second
    signal leaves at once, naming the orders left and the command that finishes them. With
    --workers 0 a signal leaves the job to the workers elsewhere.
    """
    try:  # a typo in the template, or a path that is a folder, is refused before buying
        template = PathTemplate.parse(export) if export is not None else None
        if template is not None and template.fixed_path is not None:
            output_target(template.fixed_path)
    except (TemplateError, OutputRefused) as exc:
        _fail(ExitCode.BAD_INPUT, str(exc))
    signals = Signals()
    signals.install()
    try:
        with _guard():
            final = _run(ctx, job_file, template, workers, allow_overlap, quiet, signals)
    except Interrupted as exc:
        _fail(
            ExitCode.for_signal(exc.signum),
            "interrupted before the job was submitted; nothing was bought",
        )
    finally:
        signals.restore()
    raise typer.Exit(int(signals.exit_code() if signals.received else final.exit_code()))


def _run(
    ctx: typer.Context,
    job_file: Path,
    template: PathTemplate | None,
    workers: int | None,
    allow_overlap: bool,
    quiet: bool,
    signals: Signals,
) -> Progress:
    """``run`` once its arguments are checked: its summary is printed, its verdict returned."""
    options = _ctx(ctx)
    settings = options.settings()
    level = options.log_level or settings.log_level
    if quiet:
        level = at_least(level, "warning")
        configure_logging(level)
    bar = err.is_terminal and not quiet
    with _broker_handle(settings) as (url, embedded):
        job_id, slots = _submit(
            settings, job_file, url, allow_overlap=allow_overlap, before_commit=signals.submitting
        )
        if not quiet:
            _plain(err, f"job {job_id}: {slots} numbers submitted")
        count = settings.worker_processes if workers is None else workers
        env = child_env(url, log_level=level, config=options.config, console_logs=bar)
        local = _start_workers(settings, count, env, through_bar=bar)
        watch = BrokerWatch(url, embedded, on_restart=say_to(err))
        try:
            final = _watch(settings, job_id, local, watch, signals, url=url, quiet=quiet)
        except Leave:
            if local is not None:
                local.stop(timeout=LEAVE_TIMEOUT)
            if local is None:
                _plain(err, f"interrupted; job {job_id} goes on with the workers elsewhere")
            else:
                _say_what_is_left(settings, job_id)
            raise typer.Exit(int(signals.exit_code())) from None
        except BrokerLost as exc:
            if local is not None:
                local.stop(timeout=LEAVE_TIMEOUT)
            _say_what_is_left(settings, job_id)
            _fail(ExitCode.UNAVAILABLE, str(exc))
        finally:
            watch.close()
            if local is not None:
                local.stop()
    if template is not None:
        try:
            path, rows = _export_job(settings, job_id, template)
        except OutputRefused as exc:
            # The job ran: exit 2 ("nothing was bought") only when its verdict was 0.
            _plain(out, f"job {job_id}: {final.line()}")
            code = final.exit_code()
            _fail(
                ExitCode.BAD_INPUT if code == ExitCode.OK else code,
                f"{exc}; the job's rows are in the database: "
                f"orchestrator export {job_id} --output FILE",
            )
        if not quiet:
            _plain(err, f"wrote {rows} rows to {path}")
    _plain(out, f"job {job_id}: {final.line()}")
    return final


LEAVE_TIMEOUT = 5.0  # seconds a worker has to finish its message when run leaves at once


def _say_what_is_left(settings: Settings, job_id: int) -> None:
    engine = make_database(settings)
    with transaction(engine) as session:
        cancelled = store.get_job(session, job_id).cancel_requested_at is not None
    orders = open_orders(engine, job_id)
    expiry = settings.provider_expiry
    for line in leftover_lines(job_id, orders, provider_expiry=expiry, cancelled=cancelled):
        _plain(err, line)


def _plain(console: Console, text: str) -> None:
    """One line as text: no markup, no highlighting, never wrapped (cron logs are grepped);
    provider text in it (order ids) made safe for a terminal (for_terminal)."""
    console.print(for_terminal(text), highlight=False, markup=False, soft_wrap=True)


def _start_workers(
    settings: Settings, count: int, env: dict[str, str], *, through_bar: bool
) -> LocalWorkers | None:
    if count <= 0:
        return None
    from orchestrator.cli.progress_bar import echo_to
    from workers.runner import worker_argv

    # Under a live bar, the workers' lines are printed above it rather than through it.
    on_line = echo_to(err) if through_bar else None
    return LocalWorkers(worker_argv(settings.worker_threads), count, env, on_line=on_line)


def _watch(
    settings: Settings,
    job_id: int,
    local: LocalWorkers | None,
    watch: BrokerWatch,
    signals: Signals,
    *,
    url: str,
    quiet: bool = False,
) -> Progress:
    """Wait for the job to end, showing progress; act on signals and on a broker gone.

    The first signal (with local workers) cancels the job as ``orchestrator cancel`` does and
    goes on waiting while the workers finish its bought orders; a second one raises ``Leave``.
    """
    engine = make_database(settings)
    say = say_to(err)
    label: list[Callable[[str], None]] = []
    handled = 0

    def tick() -> None:
        nonlocal handled
        if local is not None:
            local.keep_alive()
        watch.check()
        if len(signals.received) == handled:
            return
        handled = len(signals.received)
        if local is None or handled > 1:
            raise Leave
        _cancel_job(settings, url, job_id)
        orders = open_orders(engine, job_id)
        say(
            finishing_line(
                orders, cancel_min_age=settings.cancel_min_age, signum=signals.received[0]
            )
        )
        for relabel in label:
            relabel("finishing")

    if quiet:
        return wait_for_job(engine, job_id, on_progress=lambda _: None, tick=tick, interval=1.0)
    if not err.is_terminal:
        last: list[str] = []

        def report(progress: Progress) -> None:
            line = progress.line()
            if not last or last[-1] != line:
                last.append(line)
                _plain(err, f"job {job_id}: {line}")

        return wait_for_job(engine, job_id, on_progress=report, tick=tick, interval=1.0)
    from orchestrator.cli.progress_bar import ProgressBar

    with ProgressBar(err, job_id) as bar:
        label.append(bar.label)
        return wait_for_job(engine, job_id, on_progress=bar.update, tick=tick, interval=0.5)


def _cancel_job(settings: Settings, url: str, job_id: int) -> None:
    """What ``orchestrator cancel`` does: no more purchases; the bought orders get cancelled
    (once the provider allows it) unless their code comes first."""
    from orchestrator.lifecycle.sweep import sweep

    rt = make_runtime(settings, url, patient=True)
    with transaction(rt.engine) as session:
        store.request_job_cancel(session, store.get_job(session, job_id))
    _send(sweep(rt))


def _export(
    settings: Settings, job_ids: list[int], path: Path, fmt: ExportFormat | None = None
) -> int:
    engine = make_database(settings)
    with transaction(engine) as session:
        rows = store.export_rows(session, job_ids)
    chosen = fmt or ExportFormat.for_path(path)
    return write_atomically(path, lambda handle: write_rows(rows, handle, chosen))


def _export_job(settings: Settings, job_id: int, template: PathTemplate) -> tuple[Path, int]:
    """Export one job to its expanded path template; the path and the rows written."""
    with transaction(make_database(settings)) as session:
        job = store.get_job(session, job_id)
    path = template.expand(name=job.name, job_id=job_id, submitted=job.created_at)
    return path, _export(settings, [job_id], path)


@app.command()
def scheduler(
    ctx: typer.Context,
    jobs_dir: Annotated[
        Path, typer.Argument(help="A folder of job files; those with a `schedule:` run when due.")
    ],
    tick: Annotated[
        float, typer.Option(help="Seconds between looks at the folder and the clock.")
    ] = 20.0,
) -> None:
    """Submit each job file's `schedule:` when due, until stopped; one active per Redis."""
    import signal
    import threading

    import redis

    from orchestrator.jobs.scheduler import run_scheduler

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    with _guard():
        settings = _ctx(ctx).settings()
        settings.require_api_key()
        with _broker(settings) as url:
            engine = make_database(settings)
            client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

            def submit_job(path: Path) -> int:
                job_id, _slots = _submit(settings, path, url, allow_overlap=False)
                return job_id

            try:
                run_scheduler(
                    jobs_dir,
                    engine=engine,
                    redis_client=client,
                    submit=submit_job,
                    tick=tick,
                    stop=stop,
                    limits=JobLimits.of(settings),
                )
            finally:
                client.close()
                engine.dispose()


@app.command()
def worker(
    ctx: typer.Context,
    processes: Annotated[
        int | None,
        typer.Option(
            help="Worker processes, 1 or more (default: settings').", callback=_at_least(1)
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Threads per process, 1 or more (default: settings').", callback=_at_least(1)
        ),
    ] = None,
) -> None:
    """Work the queue until stopped (SIGTERM or Ctrl-C)."""
    with _guard():
        settings = _ctx(ctx).settings()
        settings.require_api_key()
        count = processes if processes is not None else settings.worker_processes
        per = threads if threads is not None else settings.worker_threads
        with _broker(settings):
            from workers.runner import run_processes, run_worker, worker_argv

            if count > 1:
                raise typer.Exit(run_processes(count, worker_argv(per)))
            raise typer.Exit(run_worker(threads=per, sweep_interval=settings.sweep_interval))


@app.command()
def status(
    ctx: typer.Context,
    job: Annotated[
        str | None, typer.Argument(help="A job id or name (default: recent jobs).")
    ] = None,
) -> None:
    """Show recent jobs with their spend, or one job: a summary and its numbers by target."""
    from orchestrator.cli.jobrun import read_progress
    from orchestrator.cli.status_view import job_summary, job_table, jobs_table

    with _guard():
        settings = _ctx(ctx).settings()
        engine = make_database(settings)
        with transaction(engine) as session:
            if job is None:
                out.print(jobs_table(session))
                return
            row = store.get_job(session, job)
            assert row.id is not None
            out.print(job_summary(session, row))
            out.print(job_table(session, row))
        _plain(out, read_progress(engine, row.id).line())


@app.command("export")
def export_command(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")],
    jobs: Annotated[
        list[str] | None,
        typer.Argument(help="Job ids or names (a name: its newest job).", show_default=False),
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option("--name", help="Every job of this name (repeatable).", show_default=False),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Jobs submitted on or after this day (YYYY-MM-DD, UTC).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="Jobs submitted on or before this day (YYYY-MM-DD, UTC).")
    ] = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="csv or jsonl (default: jsonl for *.jsonl, else csv)."),
    ] = None,
) -> None:
    """Write jobs' rows, one per number with its fate: the jobs named, and every job matching
    --name / --since / --until (all that are given)."""
    try:
        selection = Selection(
            refs=tuple(jobs or ()),
            names=tuple(name or ()),
            since=parse_day(since, "--since") if since else None,
            until=parse_day(until, "--until") if until else None,
        )
    except SelectionError as exc:
        _fail(ExitCode.BAD_INPUT, str(exc))
    with _guard():
        settings = _ctx(ctx).settings()
        with transaction(make_database(settings)) as session:
            job_ids = [job.id for job in select_jobs(session, selection) if job.id is not None]
        rows = _export(settings, job_ids, output, fmt)
    noun = "job" if len(job_ids) == 1 else "jobs"
    _plain(out, f"wrote {rows} rows of {len(job_ids)} {noun} to {output}")


@app.command()
def report(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="A job id or name (a name: its newest job).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
) -> None:
    """Write a self-contained HTML page: spend and success by country, code-arrival times."""
    from orchestrator.db.models import utcnow
    from orchestrator.jobs.report import build_report, render_html

    with _guard():
        settings = _ctx(ctx).settings()
        with transaction(make_database(settings)) as session:
            row = store.get_job(session, job)
            assert row.id is not None
            page = render_html(
                build_report(row, store.export_rows(session, [row.id])), generated=utcnow()
            )
        write_atomically(output, lambda handle: handle.write(page))
    _plain(out, f"wrote the report of job {row.id} to {output}")


@app.command()
def cancel(
    ctx: typer.Context, job: Annotated[str, typer.Argument(help="A job id or name.")]
) -> None:
    """Stop buying for a job and cancel (refund) its orders that have no code yet."""
    from orchestrator.lifecycle.sweep import sweep

    with _guard():
        settings = _ctx(ctx).settings()
        with _broker(settings) as url:
            rt = make_runtime(settings, url, patient=True)
            with transaction(rt.engine) as session:
                row = store.get_job(session, job)
                requested = store.request_job_cancel(session, row)
            if not requested:
                _fail(ExitCode.BAD_INPUT, f"job {row.id} has already ended")
            _send(sweep(rt))
    out.print(f"job {row.id}: cancel requested; workers cancel its open orders")


@app.command("sweep")
def sweep_command(ctx: typer.Context) -> None:
    """Re-drive every unfinished slot whose message was lost (for cron; workers also do it)."""
    from orchestrator.lifecycle.sweep import sweep

    with _guard():
        settings = _ctx(ctx).settings()
        with _broker(settings) as url:
            nudges = sweep(make_runtime(settings, url, patient=True))
            _send(nudges)
    out.print(f"re-sent {len(nudges)} nudges")


@app.command()
def resolve(
    ctx: typer.Context,
    activation: Annotated[int, typer.Argument(help="The in-doubt slot's activation id.")],
    order_id: Annotated[
        str | None,
        typer.Option(help="The order the provider did make for it (see your dashboard)."),
    ] = None,
    not_bought: Annotated[
        bool, typer.Option("--not-bought", help="The provider made no order for it.")
    ] = False,
) -> None:
    """Settle an in-doubt purchase by hand: attach the real order, or release it."""
    from orchestrator.errors import ResolveRefused
    from orchestrator.lifecycle.doubt import ORDER_ID_RULE, resolve_in_doubt
    from orchestrator.provider.client import usable_order_id

    if (order_id is None) == (not not_bought):
        _fail(ExitCode.BAD_INPUT, "give exactly one of --order-id ID or --not-bought")
    if order_id is not None and usable_order_id(order_id) is None:
        _fail(ExitCode.BAD_INPUT, f"--order-id must be {ORDER_ID_RULE}")
    with _guard():
        settings = _ctx(ctx).settings()
        with _broker(settings) as url:
            rt = make_runtime(settings, url, patient=True)
            try:
                nudges = resolve_in_doubt(rt, activation, order_id=order_id)
            except ResolveRefused as exc:  # a bad request: nothing changed
                _fail(ExitCode.BAD_INPUT, str(exc))
            _send(nudges)
    out.print(f"slot {activation} resolved")


@app.command()
def balance(ctx: typer.Context) -> None:
    """Print the wallet balance."""
    with _guard():
        settings = _ctx(ctx).settings()
        with _broker(settings) as url, _client(settings, url) as client:
            out.print(str(client.balance()))


@app.command()
def services(ctx: typer.Context) -> None:
    """List the services (apps) and their ids."""
    with _guard():
        settings = _ctx(ctx).settings()
        with _broker(settings) as url, _client(settings, url) as client:
            rows = client.services()
    table = Table("id", "service")
    for service in rows:
        table.add_row(str(service.id), Text(for_terminal(service.name)))
    out.print(table)


@app.command()
def prices(
    ctx: typer.Context, service: Annotated[str, typer.Argument(help="A service name or id.")]
) -> None:
    """List live prices, stock and success rates per country for a service."""
    with _guard():
        settings = _ctx(ctx).settings()
        with _broker(settings) as url, _client(settings, url) as client:
            known = client.services()
            match = [s for s in known if str(s.id) == service or s.name.lower() == service.lower()]
            if not match:
                _fail(ExitCode.BAD_INPUT, f"no service {service!r}; see `orchestrator services`")
            rows = client.prices(match[0].id)
    table = Table("country id", "country", "cost", "stock", "success %")
    for price in sorted(rows.values(), key=lambda p: p.cost):
        table.add_row(
            str(price.country_id),
            Text(for_terminal(price.country)),
            str(price.cost),
            str(price.count),
            str(price.rate),
        )
    out.print(table)


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


db_app = typer.Typer(
    help="The database schema: migrate it, or see where it stands.", no_args_is_help=True
)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Migrate the database to the newest schema (every command also does this on first use)."""
    from orchestrator.db import migrate
    from orchestrator.db.engine import make_engine

    with _guard():
        engine = make_engine(_ctx(ctx).settings().effective_database_url)
        try:
            before = migrate.current_revision(engine)
            migrate.upgrade(engine)
            after = migrate.current_revision(engine)
        finally:
            engine.dispose()
    change = "up to date" if before == after else f"migrated from {before or 'empty'}"
    out.print(f"database at revision {after} ({change})", highlight=False)


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the database's schema revision, the newest one, and any difference from the models."""
    from orchestrator.db import migrate
    from orchestrator.db.engine import make_engine

    with _guard():
        engine = make_engine(_ctx(ctx).settings().effective_database_url)
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


def main() -> None:
    """Entry point of the ``orchestrator`` command."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(int(ExitCode.INTERRUPTED))
