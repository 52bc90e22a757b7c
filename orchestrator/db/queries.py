"""Reads that only show: the status tables' counts and the scheduler's last fires."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session, col

from orchestrator.db.models import Activation, Job, ScheduleFire, State, Target


def recent_jobs(session: Session, limit: int) -> list[tuple[Job, int, int]]:
    """The newest ``limit`` jobs, each with how many slots it has and how many got a code."""
    query = (
        select(
            Job,
            func.count(col(Activation.id)),
            func.count(col(Activation.id)).filter(col(Activation.state) == State.RECEIVED),
        )
        .join(Activation, col(Activation.job_id) == col(Job.id))
        .group_by(col(Job.id))
        .order_by(col(Job.id).desc())
        .limit(limit)
    )
    return [(job, count, received) for job, count, received in session.execute(query).all()]


def target_state_counts(session: Session, job_id: int) -> list[tuple[Target, str, int]]:
    """How many of a job's slots are in each state, per target, in the targets' order."""
    query = (
        select(Target, col(Activation.state), func.count())
        .join(Activation, col(Activation.target_id) == col(Target.id))
        .where(col(Target.job_id) == job_id)
        .group_by(col(Target.id), col(Activation.state))
        .order_by(col(Target.position))
    )
    return [(target, state, count) for target, state, count in session.execute(query).all()]


def last_fires(session: Session) -> dict[str, datetime]:
    """The latest recorded fire of each scheduled job name."""
    query = select(col(ScheduleFire.job_name), func.max(col(ScheduleFire.fire_at))).group_by(
        col(ScheduleFire.job_name)
    )
    return {name: at for name, at in session.execute(query).all()}  # noqa: C416
