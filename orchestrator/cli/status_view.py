"""Rich tables for ``orchestrator status``: recent jobs, and one job by target and state;
and the circuit breakers open now.

Names (the provider's services, the job's) are shown as text: ``_text`` (no markup, control
characters escaped, secrets masked).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from orchestrator.config import Settings
from orchestrator.db import queries
from orchestrator.db.models import FINAL_STATES, Job, State, Target, utcnow
from orchestrator.lifecycle.breaker import read_breakers
from orchestrator.money import from_micros
from orchestrator.redact import for_terminal

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

RECENT_JOBS = 20


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _text(value: str) -> Text:
    return Text(for_terminal(value))


def _budget(job: Job) -> str:
    return str(from_micros(job.budget_micros)) if job.budget_micros is not None else "-"


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
            job.status.value,
            str(count),
            str(received),
            str(from_micros(queries.spend_micros(session, job.id))),
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
        ("status", job.status.value),
        ("created (UTC)", _when(job.created_at)),
        ("finished (UTC)", _when(job.finished_at)),
        ("numbers", f"{ended}/{total} ended"),
        *((state.value, str(counts[state])) for state in State if counts[state]),
        ("success rate", f"{counts[State.RECEIVED] / settled:.0%}" if settled else "-"),
        ("spent", str(spent)),
        ("budget", _budget(job)),
        ("reserved", str(from_micros(job.reserved_micros))),
    ]
    for label, value in rows:
        table.add_row(label, value)
    return table


def job_table(session: Session, job: Job) -> Table:
    """One row per target: how many of its slots are in each state, and what it spent."""
    assert job.id is not None
    states = list(State)
    table = Table(
        "target",
        "service",
        *[s.value for s in states],
        "spent",
        title=_text(f"job {job.id} ({job.name}) by target"),
    )
    per_target: dict[int, tuple[Target, dict[State, int]]] = {}
    for target, state, count in queries.target_state_counts(session, job.id):
        assert target.id is not None
        entry = per_target.setdefault(target.id, (target, {}))
        entry[1][State(state)] = int(count)
    spent = queries.spend_micros_by_target(session, job.id)
    for target_id, (target, counts) in per_target.items():
        label = f"#{target.position} (cap {from_micros(target.max_price_micros)})"
        table.add_row(
            label,
            _text(target.service_name),
            *[str(counts.get(s, 0)) for s in states],
            str(from_micros(spent.get(target_id, 0))),
        )
    return table


def breaker_lines(session: Session, settings: Settings) -> list[str]:
    """One line per (service, country) whose circuit breaker is open now (breaker.py)."""
    found = read_breakers(
        session,
        failures=settings.breaker_failures,
        cooldown=settings.breaker_cooldown,
        now=utcnow(),
    )
    # Shown with plain(), which makes the provider's names safe for a terminal.
    return [
        f"breaker open: {b.service_name} in {b.country_name} until {b.until:%H:%M:%S} UTC "
        f"({b.failures} orders without a code)"
        for _, b in sorted(found.items())
    ]
