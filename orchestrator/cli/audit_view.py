"""``audit``: the wallet's movement between checkpoints against the ledger (jobs/audit.py)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from orchestrator.cli.common import (
    broker_url,
    context,
    fail,
    guard,
    out,
    plain,
    send_nudges,
)
from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.output import JSON_HELP, json_time, print_json
from orchestrator.jobs.audit import Audit, run_audit
from orchestrator.lifecycle.wiring import make_runtime
from orchestrator.money import from_micros, shown


def audit(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(help="Audit from this day on (YYYY-MM-DD, UTC); default: every checkpoint."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
    resume_settling: Annotated[
        bool,
        typer.Option(
            "--resume-settling",
            help="Settle in-doubt purchases again after the key was found not exclusive.",
        ),
    ] = False,
) -> None:
    """Check the wallet against the ledger: exit 0 when every cent is explained.

    Takes a checkpoint now (the balance, read while no purchase or cancel is in flight),
    then shows, between each two checkpoints, how much the wallet moved, how much the
    recorded charges and refunds explain, and the in-doubt purchases that could account for
    the rest. Exit 1 when something is unexplained.
    """
    start = _day(since)
    with guard():
        settings = context(ctx).settings()
        with broker_url(settings) as url:
            rt = make_runtime(settings, url, patient=True)
            result = run_audit(rt, since=start, resume_settling=resume_settling)
            send_nudges(result.nudges)
    if as_json:
        print_json(audit_json(result), out)
    else:
        _print(result)
    raise typer.Exit(int(ExitCode.OK if result.explained else ExitCode.INCOMPLETE))


def _day(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        fail(ExitCode.BAD_INPUT, f"--since must be a day, YYYY-MM-DD: got {value!r}")
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _money(micros: int) -> str:
    return shown(from_micros(micros))


def audit_json(audit: Audit) -> dict[str, Any]:
    """The ``--json`` document (README: Commands)."""
    return {
        "explained": audit.explained,
        "unexplained": _money(audit.unexplained_micros),
        "checkpoint_taken": audit.taken,
        "checkpoint_not_taken_because": audit.why_not or None,
        "exclusive_key": audit.exclusive_key,
        "settling_stopped": audit.settling_stopped,
        "checkpoints": [
            {
                "id": c.id,
                "at": json_time(c.at),
                "reason": c.reason,
                "balance": _money(c.balance_micros),
                "outcome": json.loads(c.outcome),
            }
            for c in audit.checkpoints
        ],
        "intervals": [
            {
                "from": json_time(i.start.at),
                "to": json_time(i.end.at),
                "wallet_fell": _money(i.fell_micros),
                "charged": _money(i.charged_micros),
                "refunded": _money(i.refunded_micros),
                "unexplained": _money(i.unexplained_micros),
                "bought_at_unknown_cost": list(i.unknown_cost_ids),
                "in_doubt": [
                    {
                        "slot": c.activation_id,
                        "job_id": c.job_id,
                        "price": None if c.cost_micros is None else _money(c.cost_micros),
                        "cap": _money(c.cap_micros),
                    }
                    for c in i.in_doubt
                ],
            }
            for i in audit.intervals
        ],
    }


def _print(audit: Audit) -> None:
    if not audit.taken:
        plain(out, f"no checkpoint taken now: {audit.why_not}")
    if not audit.intervals:
        plain(out, "nothing to audit yet: a checkpoint is taken at each job's start and end")
        return
    table = Table(title="wallet against ledger")
    for name in ("from", "to", "wallet fell", "charged", "refunded", "unexplained", "in doubt"):
        table.add_column(name, justify="right" if name not in ("from", "to") else "left")
    for i in audit.intervals:
        doubt = ", ".join(
            f"slot {c.activation_id} ({_money(c.cost_micros or c.cap_micros)})" for c in i.in_doubt
        )
        table.add_row(
            i.start.at.strftime("%Y-%m-%d %H:%M:%S"),
            i.end.at.strftime("%Y-%m-%d %H:%M:%S"),
            _money(i.fell_micros),
            _money(i.charged_micros),
            _money(i.refunded_micros),
            _money(i.unexplained_micros),
            doubt or "-",
        )
    if audit.intervals:
        out.print(table)
    verdict = (
        "every cent explained"
        if audit.explained
        else f"unexplained in all: {_money(audit.unexplained_micros)}"
    )
    plain(out, verdict)
    if audit.settling_stopped:
        plain(
            out,
            "settling of in-doubt purchases is stopped: the wallet moved with nothing in doubt "
            "(someone else spends on this key?); `audit --resume-settling` resumes it",
        )
    elif not audit.exclusive_key:
        plain(out, "exclusive_key is off: in-doubt purchases are reported, not settled")
