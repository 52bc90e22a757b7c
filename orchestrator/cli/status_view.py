"""Rich tables for ``orchestrator status``: recent jobs, and one job by target and state;
and the circuit breakers open now.

Names (the provider's services, the job's) are shown as text: ``_text`` (no markup, control
characters escaped, secrets masked).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from orchestrator.config import Settings
from orchestrator.db import queries
from orchestrator.db.models import FINAL_STATES, Job, JobStatus, State, Target, utcnow
from orchestrator.lifecycle.breaker import open_breakers
from orchestrator.money import from_micros, shown
from orchestrator.redact import for_terminal

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

RECENT_JOBS = 20
PAUSE_REASONS = {
    "insufficient_funds": "insufficient funds on the key",
    "min_balance": "the balance would fall under min_balance",
}


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _text(value: str) -> Text:
    return Text(for_terminal(value))


def _budget(job: Job) -> str:
    return shown(from_micros(job.budget_micros)) if job.budget_micros is not None else "-"


def jobs_table(session: Session) -> Table:
    """The most recent jobs with their status, numbers, spend and budget."""
    table = Table(
        "id",
        "name",
        "status",
        "numbers",
        "received",
        "spent",
        "budget",
        "created (UTC)",
        title="recent jobs",
    )
    for job, count, received in queries.recent_jobs(session, RECENT_JOBS):
        assert job.id is not None
        table.add_row(
            str(job.id),
            _text(job.name),
            job.shown_status,
            str(count),
            str(received),
            shown(from_micros(queries.spend_micros(session, job.id))),
            _budget(job),
            _when(job.created_at),
        )
    return table


def job_summary(session: Session, job: Job) -> Table:
    """One job at a glance: status, times, how its numbers ended, spend against budget."""
    assert job.id is not None
    counts = queries.state_counts(session, job.id)
    total = sum(counts.values())
    ended = sum(n for state, n in counts.items() if state in FINAL_STATES)
    settled = counts[State.RECEIVED] + counts[State.CANCELLED] + counts[State.EXPIRED]
    spent = from_micros(queries.spend_micros(session, job.id))
    table = Table("", "", title=_text(f"job {job.id} ({job.name})"), show_header=False)
    rows = [
        ("status", job.shown_status),
        ("created (UTC)", _when(job.created_at)),
        ("finished (UTC)", _when(job.finished_at)),
        ("numbers", f"{ended}/{total} ended"),
        *((state.value, str(counts[state])) for state in State if counts[state]),
        ("success rate", f"{counts[State.RECEIVED] / settled:.0%}" if settled else "-"),
        ("spent", shown(spent)),
        ("budget", _budget(job)),
        ("reserved", shown(from_micros(job.reserved_micros))),
    ]
    for label, value in rows:
        table.add_row(label, value)
    return table


# Slots that hold a number: bought, whatever came of it (an in-doubt one may or may not).
BOUGHT = (
    State.WAITING,
    State.CANCELLING,
    State.RECEIVED,
    State.CANCELLED,
    State.EXPIRED,
    State.LOST,
)


def job_table(session: Session, job: Job) -> Table:
    """One row per target: codes received of wanted, numbers bought, how many of its slots are
    in each state, what it spent, and what a code cost."""
    assert job.id is not None
    states = list(State)
    table = Table(
        "target",
        "service",
        "codes",
        "bought",
        *[s.value for s in states],
        "spent",
        "per code",
        title=_text(f"job {job.id} ({job.name}) by target"),
    )
    per_target: dict[int, tuple[Target, dict[State, int]]] = {}
    for target, state, count in queries.target_state_counts(session, job.id):
        assert target.id is not None
        entry = per_target.setdefault(target.id, (target, {}))
        entry[1][State(state)] = int(count)
    spent = queries.spend_micros_by_target(session, job.id)
    for target_id, (target, counts) in per_target.items():
        label = f"#{target.position} (cap {shown(from_micros(target.max_price_micros))})"
        received = counts.get(State.RECEIVED, 0)
        wanted = target.codes_wanted or target.quantity
        bought = sum(counts.get(state, 0) for state in BOUGHT)
        cost = spent.get(target_id, 0)
        table.add_row(
            label,
            _text(target.service_name),
            f"{received}/{wanted}",
            str(bought),
            *[str(counts.get(s, 0)) for s in states],
            shown(from_micros(cost)),
            shown(from_micros(cost // received)) if received else "-",
        )
    return table


def breaker_lines(session: Session, settings: Settings) -> list[str]:
    """One line per (service, country) whose circuit breaker is open now (breaker.py)."""
    found = open_breakers(session, settings, utcnow())
    # Shown with plain(), which makes the provider's names safe for a terminal.
    return [
        f"breaker open: {b.service_name} in {b.country_name} until {b.until:%H:%M:%S} UTC "
        f"({b.failures} orders without a code)"
        for _, b in sorted(found.items())
    ]


def buying_paused(session: Session, job: Job, now: datetime | None = None) -> str | None:
    """ "buying paused: <why> until HH:MM:SS UTC" while a wallet pause holds the active job's
    purchases (purchase.py records it on the job), else None."""
    found = wallet_pause(session, job, now)
    if found is None:
        return None
    reason, until = found
    why = PAUSE_REASONS.get(reason, reason)
    return f"buying paused: {why} until {until.strftime('%H:%M:%S')} UTC"


def wallet_pause(
    session: Session, job: Job, now: datetime | None = None
) -> tuple[str, datetime] | None:
    """The reason (a key of PAUSE_REASONS) and end of the wallet pause holding the active
    job's purchases now, if one does."""
    assert job.id is not None
    if job.status is not JobStatus.ACTIVE:
        return None
    event = queries.last_event(session, job.id, "buying_paused")
    if event is None:
        return None
    try:
        detail = json.loads(event.detail)
        until = datetime.fromisoformat(detail["until"])
        reason = str(detail["reason"])
    except (ValueError, KeyError, TypeError):
        return None
    if until <= (now or datetime.now(UTC)):
        return None
    return reason, until
