"""``submit`` and ``run``: put a job on the queue, or run it here to the end and export it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orchestrator.cli.common import (
    METRICS_HOST,
    OVERLAP_HELP,
    MetricsHost,
    MetricsPort,
    at_least_option,
    broker_handle,
    broker_url,
    check_job_file,
    context,
    err,
    fail,
    guard,
    metrics_served,
    out,
    plain,
    send_nudges,
    submit_file,
)
from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.progress_bar import say_to, spinner, tell
from orchestrator.cli.watch import (
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
from orchestrator.config import Settings
from orchestrator.db import queries, store
from orchestrator.db.engine import transaction
from orchestrator.errors import (
    OutputRefused,
)
from orchestrator.jobs.export import export_job
from orchestrator.jobs.export_path import PathTemplate, TemplateError
from orchestrator.jobs.output_file import output_target
from orchestrator.lifecycle.wiring import make_database, make_runtime
from orchestrator.logs import at_least, configure_logging
from workers.embedded_broker import BrokerLost
from workers.runner import LocalWorkers, child_env

if TYPE_CHECKING:
    from workers.metrics_server import MetricsServer


def submit(
    ctx: typer.Context,
    job_file: Annotated[Path, typer.Argument(help="The job's YAML file.")],
    allow_overlap: Annotated[bool, typer.Option(help=OVERLAP_HELP)] = False,
) -> None:
    """Put a job on the queue for the workers (see `worker`), and print its id."""
    with guard():
        settings = context(ctx).settings()
        check_job_file(settings, job_file)
        with broker_url(settings) as url, spinner(err, f"submitting {job_file}"):
            job_id, slots = submit_file(settings, job_file, url, allow_overlap=allow_overlap)
    out.print(f"submitted job {job_id} ({slots} numbers)")


def run(
    ctx: typer.Context,
    job_file: Annotated[Path, typer.Argument(help="The job's YAML file.")],
    export: Annotated[
        str | None,
        typer.Option(
            "--export",
            "-o",
            metavar="PATH",
            help="Write the job's rows here when it ends: CSV, or JSON lines for *.jsonl. "
            "{name}, {job_id}, {date} (YYYY-MM-DD) and {time} (HHMMSS) are filled in, "
            "from the job's submission in UTC.",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Local worker processes to start (0 or more); 0 when workers run elsewhere.",
            callback=at_least_option(0),
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
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = METRICS_HOST,
    min_success: Annotated[
        str | None,
        typer.Option(
            metavar="SHARE",
            help="Exit 0 when each target got at least this share of what it asked (numbers, "
            "or codes for a codes: target): a fraction 0-1 (0.8) or a percentage (80%). "
            "In-doubt purchases still exit 3.",
        ),
    ] = None,
) -> None:
    """Submit a job, work it with local workers, wait until every number ended, export.

    Ctrl-C or SIGTERM stops the buying and finishes the orders bought (codes read, code-less
    ones cancelled as soon as the provider allows), exports, and exits 130 / 143; a second
    signal leaves at once, naming the orders left and the command that finishes them. With
    --workers 0 a signal leaves the job to the workers elsewhere.
    """
    share = _share(min_success) if min_success is not None else None
    try:  # a typo in the template, or a path that is a folder, is refused before buying
        template = PathTemplate.parse(export) if export is not None else None
        if template is not None and template.fixed_path is not None:
            output_target(template.fixed_path)
    except (TemplateError, OutputRefused) as exc:
        fail(ExitCode.BAD_INPUT, str(exc))
    signals = Signals()
    signals.install()
    try:
        with guard():
            final = _run(
                ctx,
                job_file,
                template,
                workers,
                allow_overlap,
                quiet,
                signals,
                share,
                metrics=(metrics_host, metrics_port),
            )
    except Interrupted as exc:
        fail(
            ExitCode.for_signal(exc.signum),
            "interrupted before the job was submitted; nothing was bought",
        )
    finally:
        signals.restore()
    raise typer.Exit(int(signals.exit_code() if signals.received else final.exit_code(share)))


def _share(text: str) -> Decimal:
    """``--min-success``: a fraction from 0 to 1 (``0.8``) or a percentage (``80%``)."""
    try:
        share = Decimal(text[:-1]) / 100 if text.endswith("%") else Decimal(text)
    except InvalidOperation:
        share = Decimal("NaN")
    if not (share.is_finite() and 0 <= share <= 1):
        fail(
            ExitCode.BAD_INPUT,
            f"--min-success must be a fraction from 0 to 1 (0.8) or a percentage (80%), "
            f"got {text!r}",
        )
    return share


def _run(
    ctx: typer.Context,
    job_file: Path,
    template: PathTemplate | None,
    workers: int | None,
    allow_overlap: bool,
    quiet: bool,
    signals: Signals,
    min_success: Decimal | None,
    *,
    metrics: tuple[str, int | None],
) -> Progress:
    """``run`` once its arguments are checked: its summary is printed, its verdict returned."""
    options = context(ctx)
    settings = options.settings()
    level = options.log_level or settings.log_level
    if quiet:
        level = at_least(level, "warning")
        configure_logging(level)
    bar = err.is_terminal and not quiet
    check_job_file(settings, job_file)
    with (
        broker_handle(settings) as (url, embedded),
        metrics_served(settings, *metrics) as server,
    ):
        with nullcontext() if quiet else spinner(err, f"submitting {job_file}"):
            job_id, slots = submit_file(
                settings,
                job_file,
                url,
                allow_overlap=allow_overlap,
                before_commit=signals.submitting,
            )
        if not quiet:
            tell(err, "job_submitted", f"job {job_id}: {slots} numbers submitted", job_id=job_id)
        count = settings.worker_processes if workers is None else workers
        env = child_env(url, log_level=level, config=options.config, console_logs=bar)
        local = _start_workers(settings, count, env, through_bar=bar, metrics=server)
        watch = BrokerWatch(url, embedded, on_restart=say_to(err, "broker_restarted", warn=True))
        try:
            final = _watch(settings, job_id, local, watch, signals, url=url, quiet=quiet)
        except Leave:
            if local is not None:
                local.stop(timeout=LEAVE_TIMEOUT)
            if local is None:
                tell(
                    err,
                    "run_left",
                    f"interrupted; job {job_id} goes on with the workers elsewhere",
                    warn=True,
                    job_id=job_id,
                )
            else:
                _say_what_is_left(settings, job_id)
            raise typer.Exit(int(signals.exit_code())) from None
        except BrokerLost as exc:
            if local is not None:
                local.stop(timeout=LEAVE_TIMEOUT)
            _say_what_is_left(settings, job_id)
            fail(ExitCode.UNAVAILABLE, str(exc))
        finally:
            watch.close()
            if local is not None:
                local.stop()
    if template is not None:
        try:
            path, rows = export_job(make_database(settings), job_id, template)
        except OutputRefused as exc:
            # The job ran: exit 2 ("nothing was bought") only when its verdict was 0.
            plain(out, f"job {job_id}: {final.line()}")
            code = final.exit_code(min_success)
            fail(
                ExitCode.BAD_INPUT if code == ExitCode.OK else code,
                f"{exc}; the job's rows are in the database: "
                f"orchestrator export {job_id} --output FILE",
            )
        if not quiet:
            tell(err, "export_written", f"wrote {rows} rows to {path}", rows=rows, path=str(path))
    plain(out, f"job {job_id}: {final.line()}")
    return final


LEAVE_TIMEOUT = 5.0  # seconds a worker has to finish its message when run leaves at once


def _say_what_is_left(settings: Settings, job_id: int) -> None:
    engine = make_database(settings)
    with transaction(engine) as session:
        cancelled = queries.get_job(session, job_id).cancel_requested_at is not None
    orders = open_orders(engine, job_id)
    expiry = settings.provider_expiry
    for line in leftover_lines(job_id, orders, provider_expiry=expiry, cancelled=cancelled):
        tell(err, "orders_left", line, warn=True, job_id=job_id)


def _start_workers(
    settings: Settings,
    count: int,
    env: dict[str, str],
    *,
    through_bar: bool,
    metrics: MetricsServer | None,
) -> LocalWorkers | None:
    if count <= 0:
        return None
    from orchestrator.cli.progress_bar import echo_to
    from workers.runner import worker_argv

    # Under a live bar, the workers' lines are printed above it rather than through it.
    on_line = echo_to(err) if through_bar else None
    if metrics is not None:  # run serves its workers' metrics, summed, on its one port
        env = metrics.worker_env(env)
    on_exit = None if metrics is None else metrics.process_gone
    return LocalWorkers(
        worker_argv(settings.worker_threads), count, env, on_line=on_line, on_exit=on_exit
    )


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
    say = say_to(err, "run_interrupted", warn=True)
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
                tell(
                    err, "job_progress", f"job {job_id}: {line}", job_id=job_id, **progress.fields()
                )

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
        store.request_job_cancel(session, queries.get_job(session, job_id))
    send_nudges(sweep(rt))
