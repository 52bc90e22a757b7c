"""Rich tables for ``orchestrator status``: recent jobs, and one job by target and state."""

from __future__ import annotations

from rich.table import Table
from sqlalchemy import func, select
from sqlmodel import Session, col

from orchestrator.models import Activation, Job, State, Target
from orchestrator.money import from_micros

RECENT_JOBS = 20


def jobs_table(session: Session) -> Table:
    """The most recent jobs with their status and slot count."""
    table = Table("id", "name", "status", "numbers", "created (UTC)", title="recent jobs")
    query = (
        select(Job, func.count(col(Activation.id)))
        .join(Activation, col(Activation.job_id) == col(Job.id))
        .group_by(col(Job.id))
        .order_by(col(Job.id).desc())
        .limit(RECENT_JOBS)
    )
    for job, count in session.execute(query).all():
        table.add_row(
            str(job.id),
            job.name,
            job.status.value,
            str(count),
            job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def job_table(session: Session, job: Job) -> Table:
    """One row per target: how many of its slots are in each state."""
    states = list(State)
    table = Table(
        "target", "service", *[s.value for s in states], title=f"job {job.id} ({job.name})"
    )
    query = (
        select(Target, col(Activation.state), func.count())
        .join(Activation, col(Activation.target_id) == col(Target.id))
        .where(col(Target.job_id) == job.id)
        .group_by(col(Target.id), col(Activation.state))
        .order_by(col(Target.position))
    )
    per_target: dict[int, tuple[Target, dict[State, int]]] = {}
    for target, state, count in session.execute(query).all():
        entry = per_target.setdefault(target.id, (target, {}))
        entry[1][State(state)] = int(count)
    for target, counts in per_target.values():
        label = f"#{target.position} (cap {from_micros(target.max_price_micros)})"
        table.add_row(label, target.service_name, *[str(counts.get(s, 0)) for s in states])
    return table
