"""The money gauges' one read of the database (lifecycle/gauges.py): slots grouped by job,
service, country and state with their money, and the old code-less orders whose refund may be
at risk."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlmodel import Session, col

from orchestrator.db.models import Activation, Job, JobStatus, State, Target
from orchestrator.db.queries import CHARGED


@dataclass(frozen=True)
class SlotGroup:
    """The slots of one job in one service, country and state, and their money (micros)."""

    job_id: int
    job_name: str
    service: str
    country: str | None  # None: no country chosen yet
    state: State
    numbers: int
    spent_micros: int  # by the one spend rule, ``CHARGED``
    refunded_micros: int  # cancelled orders: charged, then refunded
    in_doubt_micros: int  # in-doubt purchases, at what the budget holds for them (the cap)


@dataclass(frozen=True)
class OldOrder:
    """A bought order still without its code, bought long ago (its refund may be at risk)."""

    job_id: int
    job_name: str
    service: str
    country: str | None
    state: State
    ordered_at: datetime
    code_timeout: float  # the job's
    cost_micros: int


@dataclass(frozen=True)
class MoneyFigures:
    """What the money gauges show: one read of the database, at one scrape."""

    groups: list[SlotGroup]
    old_orders: list[OldOrder]


def read(session: Session, *, finished_since: datetime, bought_before: datetime) -> MoneyFigures:
    """The slots of active jobs and of jobs finished since ``finished_since``, grouped by job,
    service, country and state; and their code-less orders (waiting or cancelling) bought
    before ``bought_before``. Old jobs are left out: scrapes stay cheap and labels few."""
    in_scope = or_(col(Job.status) == JobStatus.ACTIVE, col(Job.finished_at) >= finished_since)

    def total(column: Any, where: Any) -> Any:
        return func.coalesce(func.sum(column).filter(where), 0)

    groups = (
        select(
            col(Job.id),
            col(Job.name),
            col(Target.service_name),
            col(Activation.country_name),
            col(Activation.state),
            func.count(),
            total(col(Activation.cost_micros), CHARGED),
            total(col(Activation.cost_micros), col(Activation.state) == State.CANCELLED),
            total(col(Activation.reserved_micros), col(Activation.state) == State.IN_DOUBT),
        )
        .join(Target, col(Target.job_id) == col(Job.id))
        .join(Activation, col(Activation.target_id) == col(Target.id))
        .where(in_scope)
        .group_by(
            col(Job.id),
            col(Job.name),
            col(Target.service_name),
            col(Activation.country_name),
            col(Activation.state),
        )
    )
    old = (
        select(
            col(Job.id),
            col(Job.name),
            col(Target.service_name),
            col(Activation.country_name),
            col(Activation.state),
            col(Activation.ordered_at),
            col(Job.code_timeout),
            func.coalesce(col(Activation.cost_micros), col(Activation.cap_micros)),
        )
        .join(Target, col(Target.id) == col(Activation.target_id))
        .join(Job, col(Job.id) == col(Activation.job_id))
        .where(
            col(Job.status) == JobStatus.ACTIVE,
            col(Activation.state).in_([State.WAITING, State.CANCELLING]),
            col(Activation.ordered_at) < bought_before,
        )
    )
    return MoneyFigures(
        groups=[
            SlotGroup(
                int(job_id),
                str(name),
                str(service),
                country,
                State(state),
                int(n),
                int(spent),
                int(refunded),
                int(in_doubt),
            )
            for job_id, name, service, country, state, n, spent, refunded, in_doubt in (
                session.execute(groups).all()
            )
        ],
        old_orders=[
            OldOrder(
                int(job_id),
                str(name),
                str(service),
                country,
                State(state),
                ordered_at,
                float(timeout),
                int(cost_micros),
            )
            for job_id, name, service, country, state, ordered_at, timeout, cost_micros in (
                session.execute(old).all()
            )
        ],
    )
