"""Commands on jobs already submitted, and the long-running ones: scheduler, worker, status,
export, report, cancel, sweep, resolve."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import (
    METRICS_HOST,
    MetricsHost,
    MetricsPort,
    at_least_option,
    broker_url,
    context,
    err,
    fail,
    guard,
    metrics_served,
    more_than_zero,
    out,
    plain,
    send_nudges,
    submit_file,
)
from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.output import JSON_HELP, print_json
from orchestrator.config import Settings
from orchestrator.db import queries, store
from orchestrator.db.engine import transaction
from orchestrator.jobs.export import ExportFormat, export_jobs, export_jobs_to
from orchestrator.jobs.export_select import Selection, SelectionError, parse_day, select_jobs
from orchestrator.jobs.output_file import write_atomically
from orchestrator.jobs.spec import JobLimits
from orchestrator.lifecycle.wiring import make_database, make_runtime

STDOUT = "-"  # export --output -


def scheduler(
    ctx: typer.Context,
    jobs_dir: Annotated[
        Path, typer.Argument(help="A folder of job files; those with a `schedule:` run when due.")
    ],
    tick: Annotated[
        float,
        typer.Option(
            help="Seconds between looks at the folder and the clock.", callback=more_than_zero
        ),
    ] = 20.0,
) -> None:
    """Submit each job file's `schedule:` when due, until stopped; one active per Redis.

    It only submits: the jobs wait on the queue for workers, so run `orchestrator worker`
    (or `docker compose up`) elsewhere too. A job file seen for the first time fires at its
    next scheduled time, never at one that passed before it was seen.
    """
    import signal
    import threading

    import redis

    from orchestrator.jobs.scheduler import run_scheduler

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    with guard():
        settings = context(ctx).settings()
        settings.require_api_key()
        with broker_url(settings) as url:
            engine = make_database(settings)
            client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

            def submit_job(path: Path) -> int:
                job_id, _slots = submit_file(settings, path, url, allow_overlap=False)
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


def worker(
    ctx: typer.Context,
    processes: Annotated[
        int | None,
        typer.Option(
            help="Worker processes, 1 or more (default: settings').", callback=at_least_option(1)
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="Threads per process, 1 or more (default: settings').", callback=at_least_option(1)
        ),
    ] = None,
    metrics_port: MetricsPort = None,
    metrics_host: MetricsHost = METRICS_HOST,
) -> None:
    """Work the queue until stopped (SIGTERM or Ctrl-C)."""
    with guard():
        settings = context(ctx).settings()
        settings.require_api_key()
        count = processes if processes is not None else settings.worker_processes
        per = threads if threads is not None else settings.worker_threads
        with broker_url(settings), metrics_served(settings, metrics_host, metrics_port) as metrics:
            from workers.runner import run_processes, run_worker, worker_argv

            # With metrics, even one worker process runs under this one, which serves them:
            # the worker's metrics mode is chosen in its environment before it starts.
            if count > 1 or metrics is not None:
                raise typer.Exit(run_processes(count, worker_argv(per), metrics))
            raise typer.Exit(run_worker(threads=per, sweep_interval=settings.sweep_interval))


def status(
    ctx: typer.Context,
    job: Annotated[
        str | None, typer.Argument(help="A job id or name (default: recent jobs).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show recent jobs with their spend, or one job: a summary and its numbers by target;
    and the circuit breakers open now (countries passed over after orders without a code)."""
    from orchestrator.cli.status_json import job_document, jobs_document
    from orchestrator.cli.status_view import (
        breaker_lines,
        buying_paused,
        job_summary,
        job_table,
        jobs_table,
    )
    from orchestrator.cli.watch import read_progress

    with guard():
        settings = context(ctx).settings()
        engine = make_database(settings)
        with transaction(engine) as session:
            row = queries.get_job(session, job) if job is not None else None
            if as_json:
                document = (
                    jobs_document(session, settings)
                    if row is None
                    else job_document(session, settings, row)
                )
                print_json(document, out)
                return
            breakers = breaker_lines(session, settings)
            if row is None:
                out.print(jobs_table(session))
                for line in breakers:
                    plain(out, line)
                return
            assert row.id is not None
            out.print(job_summary(session, row))
            out.print(job_table(session, row))
            paused = buying_paused(session, row)
        plain(out, read_progress(engine, row.id).line())
        if paused is not None:
            plain(out, paused)
        for line in breakers:
            plain(out, line)


def export_command(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The file to write; - for stdout.")
    ],
    jobs: Annotated[
        list[str] | None,
        typer.Argument(help="Job ids or names (a name: its newest job).", show_default=False),
    ] = None,
    name: Annotated[
        list[str] | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="Every job of this name (repeatable).",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(metavar="DAY", help="Jobs submitted on or after this day (YYYY-MM-DD, UTC)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(metavar="DAY", help="Jobs submitted on or before this day (YYYY-MM-DD, UTC)."),
    ] = None,
    fmt: Annotated[
        ExportFormat | None,
        typer.Option("--format", help="csv or jsonl (default: jsonl for *.jsonl, else csv)."),
    ] = None,
) -> None:
    """Write jobs' rows, one per number with its fate.

    The jobs named, and every job matching --name / --since / --until (all that are given).
    """
    try:
        selection = Selection(
            refs=tuple(jobs or ()),
            names=tuple(name or ()),
            since=parse_day(since, "--since") if since else None,
            until=parse_day(until, "--until") if until else None,
        )
    except SelectionError as exc:
        fail(ExitCode.BAD_INPUT, str(exc))
    with guard():
        settings = context(ctx).settings()
        with transaction(make_database(settings)) as session:
            job_ids = [job.id for job in select_jobs(session, selection) if job.id is not None]
        to_stdout = str(output) == STDOUT
        if to_stdout:
            rows = _export_to_stdout(settings, job_ids, fmt or ExportFormat.CSV)
        else:
            rows = export_jobs(make_database(settings), job_ids, output, fmt)
    noun = "job" if len(job_ids) == 1 else "jobs"
    # On stderr when the rows went to stdout: a script reads them and nothing else.
    plain(
        err if to_stdout else out,
        f"wrote {rows} rows of {len(job_ids)} {noun} to {'stdout' if to_stdout else output}",
    )


def _export_to_stdout(settings: Settings, job_ids: list[int], fmt: ExportFormat) -> int:
    engine = make_database(settings)
    if not out.is_terminal:  # a pipe or a file: the bytes an --output FILE would hold
        rows = export_jobs_to(engine, job_ids, sys.stdout, fmt)
        sys.stdout.flush()
        return rows
    # For eyes: each line as text, so the provider's cannot act on the terminal (plain).
    shown = io.StringIO()
    rows = export_jobs_to(engine, job_ids, shown, fmt)
    for line in shown.getvalue().splitlines():
        plain(out, line)
    return rows


def report(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="A job id or name (a name: its newest job).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write.")],
) -> None:
    """Write a self-contained HTML page: per service and country the numbers, codes, spend,
    refunds and cost per code; why numbers got no code; code-arrival times; a timeline."""
    from orchestrator.db.models import utcnow
    from orchestrator.jobs.report import build_report
    from orchestrator.jobs.report_page import render_html

    with guard():
        settings = context(ctx).settings()
        with transaction(make_database(settings)) as session:
            row = queries.get_job(session, job)
            assert row.id is not None
            page = render_html(
                build_report(
                    row,
                    queries.export_rows(session, [row.id]),
                    queries.money_by_service_country(session, row.id),
                ),
                generated=utcnow(),
            )
        write_atomically(output, lambda handle: handle.write(page))
    plain(out, f"wrote the report of job {row.id} to {output}")


def cancel(
    ctx: typer.Context, job: Annotated[str, typer.Argument(help="A job id or name.")]
) -> None:
    """Stop buying for a job and cancel (refund) its orders that have no code yet.

    A job that has already ended is left as it is (exit 0: safe to repeat)."""
    from orchestrator.lifecycle.sweep import sweep

    with guard():
        settings = context(ctx).settings()
        with broker_url(settings) as url:
            rt = make_runtime(settings, url, patient=True)
            with transaction(rt.engine) as session:
                row = queries.get_job(session, job)
                requested = store.request_job_cancel(session, row)
            if not requested:  # done already: safe to repeat, so not an error
                plain(
                    out, f"job {row.id} has already ended ({row.status.value}); nothing to cancel"
                )
                return
            send_nudges(sweep(rt))
    out.print(f"job {row.id}: cancel requested; workers cancel its open orders")


def sweep_command(ctx: typer.Context) -> None:
    """Re-drive every unfinished slot whose message was lost (for cron; workers also do it)."""
    from orchestrator.lifecycle.sweep import sweep

    with guard():
        settings = context(ctx).settings()
        with broker_url(settings) as url:
            nudges = sweep(make_runtime(settings, url, patient=True))
            send_nudges(nudges)
    out.print(f"re-sent {len(nudges)} nudges")


def resolve(
    ctx: typer.Context,
    activation: Annotated[int, typer.Argument(help="The in-doubt slot's activation id.")],
    order_id: Annotated[
        str | None,
        typer.Option(
            metavar="ID", help="The order the provider did make for it (see your dashboard)."
        ),
    ] = None,
    not_bought: Annotated[
        bool, typer.Option("--not-bought", help="The provider made no order for it.")
    ] = False,
) -> None:
    """Settle an in-doubt purchase by hand: attach the real order, or release it."""
    from orchestrator.errors import ResolveRefused
    from orchestrator.lifecycle.resolve_in_doubt import ORDER_ID_RULE, resolve_in_doubt
    from orchestrator.provider.answers import usable_order_id

    if (order_id is None) == (not not_bought):
        fail(ExitCode.BAD_INPUT, "give exactly one of --order-id ID or --not-bought")
    if order_id is not None and usable_order_id(order_id) is None:
        fail(ExitCode.BAD_INPUT, f"--order-id must be {ORDER_ID_RULE}")
    with guard():
        settings = context(ctx).settings()
        with broker_url(settings) as url:
            rt = make_runtime(settings, url, patient=True)
            try:
                nudges = resolve_in_doubt(rt, activation, order_id=order_id)
            except ResolveRefused as exc:  # a bad request: nothing changed
                fail(ExitCode.BAD_INPUT, str(exc))
            send_nudges(nudges)
    out.print(f"slot {activation} resolved")
