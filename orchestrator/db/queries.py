"""Every read: the slots and jobs the workers act on, and what the views and reports show.

Like ``store`` (the writes), functions take ``session`` and never commit; nothing here
changes a row.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Executable, Select, and_, bindparam, case, exists, func, or_, select
from sqlmodel import Session, col

from orchestrator.db import prepared
from orchestrator.db.models import (
    LIVE_STATES,
    Activation,
    Event,
    Job,
    JobStatus,
    ScheduleFire,
    State,
    Target,
)
from orchestrator.errors import JobNotFound


def get_activation(session: Session, activation_id: int) -> Activation | None:
    """The slot, freshly read (never a stale copy from the identity map)."""
    return session.get(Activation, activation_id, populate_existing=True)


def get_activations(session: Session, activation_ids: Collection[int]) -> list[Activation]:
    """The slots among ``activation_ids`` that exist, in one query, in id order."""
    return _by_ids(session, Activation, activation_ids)


def get_jobs(session: Session, job_ids: Collection[int]) -> dict[int, Job]:
    """The jobs among ``job_ids``, by id, in one query."""
    return {job.id: job for job in _by_ids(session, Job, job_ids) if job.id is not None}


def get_targets(session: Session, target_ids: Collection[int]) -> dict[int, Target]:
    """The targets among ``target_ids``, by id, in one query."""
    return {t.id: t for t in _by_ids(session, Target, target_ids) if t.id is not None}


Table = TypeVar("Table", Activation, Job, Target)


def _by_ids(session: Session, table: type[Table], ids: Collection[int]) -> list[Table]:
    def build() -> Executable:
        wanted = col(table.id).in_(bindparam("p_ids", expanding=True))
        return select(table).where(wanted).order_by(col(table.id))

    statement = prepared.built(("by_ids", table), build)
    return list(session.execute(statement, {"p_ids": list(ids)}).scalars().all())


def get_job(session: Session, ref: str | int) -> Job:
    """A job by id, or the newest job with that name."""
    text = str(ref)
    job: Job | None
    if text.isdigit():
        job = session.get(Job, int(text))
    else:
        query = select(Job).where(col(Job.name) == text).order_by(col(Job.id).desc())
        job = session.execute(query.limit(1)).scalars().first()
    if job is None:
        raise JobNotFound(f"no job {text!r}")
    session.refresh(job)
    return job


def has_live_reservations(session: Session, job_id: int, *, besides: int) -> bool:
    """Whether another slot of the job still holds budget that a refund could free."""
    query = select(
        exists().where(
            col(Activation.job_id) == job_id,
            col(Activation.id) != besides,
            col(Activation.state).in_([State.ORDERING, State.WAITING, State.CANCELLING]),
        )
    )
    return bool(session.execute(query).scalar())


def overdue(session: Session, *, before: datetime, limit: int) -> Sequence[Activation]:
    """Live slots of active jobs whose nudge should have come by ``before``: lost messages."""
    query = (
        select(Activation)
        .join(Job, col(Job.id) == col(Activation.job_id))
        .where(
            col(Job.status) == JobStatus.ACTIVE,
            col(Activation.state).in_(list(LIVE_STATES)),
            or_(
                col(Activation.next_action_at).is_(None),
                col(Activation.next_action_at) < before,
            ),
        )
        .order_by(col(Activation.next_action_at))
        .limit(limit)
    )
    return session.execute(query).scalars().all()


def slot_holding_order(session: Session, order_id: str) -> int | None:
    """The slot (activation id) that already holds ``order_id``, if any."""
    query = select(col(Activation.id)).where(col(Activation.order_id) == order_id)
    found = session.execute(query).scalars().first()
    return None if found is None else int(found)


def active_job_ids(session: Session) -> list[int]:
    """Ids of every job not yet ended."""
    query = select(col(Job.id)).where(col(Job.status) == JobStatus.ACTIVE)
    return [int(i) for i in session.execute(query).scalars().all()]


def jobs_changed_since(session: Session, since: datetime) -> str | None:
    """ "job_started" or "job_finished" if a job was submitted or ended after ``since``."""
    started = select(func.count()).where(col(Job.created_at) > since)
    if session.execute(started).scalar_one():
        return "job_started"
    finished = select(func.count()).where(col(Job.finished_at) > since)
    return "job_finished" if session.execute(finished).scalar_one() else None


def cancelled_job_slots(session: Session, *, limit: int) -> Sequence[Activation]:
    """Slots still planned or waiting in jobs the user cancelled."""
    query = (
        select(Activation)
        .join(Job, col(Job.id) == col(Activation.job_id))
        .where(
            col(Job.status) == JobStatus.ACTIVE,
            col(Job.cancel_requested_at).is_not(None),
            col(Activation.state).in_([State.PLANNED, State.WAITING]),
        )
        .limit(limit)
    )
    return session.execute(query).scalars().all()


def state_counts(session: Session, job_id: int) -> dict[State, int]:
    """How many slots of the job are in each state."""
    query = (
        select(col(Activation.state), func.count())
        .where(col(Activation.job_id) == job_id)
        .group_by(col(Activation.state))
    )
    counts = dict.fromkeys(State, 0)
    for state, count in session.execute(query).all():
        counts[State(state)] = int(count)
    return counts


def export_rows(session: Session, job_ids: Sequence[int]) -> list[tuple[Job, Target, Activation]]:
    """Every slot of the given jobs with its job and target, in job then slot order."""
    query = (
        select(Job, Target, Activation)
        .join(Target, col(Target.job_id) == col(Job.id))
        .join(Activation, col(Activation.target_id) == col(Target.id))
        .where(col(Job.id).in_(list(job_ids)))
        .order_by(col(Job.id), col(Activation.slot))
    )
    return [(j, t, a) for j, t, a in session.execute(query).all()]


def active_job_named(session: Session, name: str) -> Job | None:
    """The active job with this name, if any (a cron run that has not finished)."""
    query = select(Job).where(col(Job.name) == name, col(Job.status) == JobStatus.ACTIVE)
    return session.execute(query.limit(1)).scalars().first()


def arrival_delays(
    session: Session, service_id: int, country_id: int, *, limit: int
) -> list[float]:
    """Seconds from purchase to code of the most recent codes for a service and country.

    A code came between the last look that found none (``code_after``) and the poll that read
    it (``code_at``): the delay counts to the middle of that span when it is known. A code
    read once its order was being cancelled is left out: the cancel moved the row, so when it
    came is known only to within the whole wait, and counted at the cancel's age it would
    teach the model to poll no earlier than the give-up time.
    """
    query = (
        select(col(Activation.ordered_at), col(Activation.code_at), col(Activation.code_after))
        .where(
            col(Activation.service_id) == service_id,
            col(Activation.country_id) == country_id,
            col(Activation.state) == State.RECEIVED,
            col(Activation.code_at).is_not(None),
            col(Activation.ordered_at).is_not(None),
            col(Activation.cancel_reason).is_(None),
        )
        .order_by(col(Activation.code_at).desc())
        .limit(limit)
    )
    delays = []
    for ordered_at, code_at, code_after in session.execute(query):
        seen = code_at
        if code_after is not None and ordered_at <= code_after < code_at:
            seen = code_after + (code_at - code_after) / 2
        delays.append((seen - ordered_at).total_seconds())
    return delays


def longest_seen_waiting(
    session: Session, service_id: int, country_id: int, *, limit: int
) -> float:
    """The oldest age, in seconds, at which one of the most recently touched orders of a
    service and country was seen without its code: how far past purchase the codes on record
    could have been observed (0.0 if none was).

    A waiting order was last seen without its code at ``code_after`` (a poll the limiter
    turned away saw nothing, and does not count); a cancelled one was refunded, so no code
    had come by its last write.
    """
    query = (
        select(
            col(Activation.ordered_at),
            col(Activation.state),
            col(Activation.code_after),
            col(Activation.updated_at),
        )
        .where(
            col(Activation.service_id) == service_id,
            col(Activation.country_id) == country_id,
            or_(
                col(Activation.state) == State.WAITING,
                col(Activation.state) == State.CANCELLED,
            ),
            col(Activation.ordered_at).is_not(None),
        )
        .order_by(col(Activation.updated_at).desc())
        .limit(limit)
    )
    ages = [
        ((looked if state == State.WAITING else updated) - ordered).total_seconds()
        for ordered, state, looked, updated in session.execute(query)
        if looked is not None or state != State.WAITING
    ]
    return max(ages, default=0.0)


def jobs_matching(
    session: Session,
    *,
    names: Collection[str] = (),
    since: datetime | None = None,
    before: datetime | None = None,
) -> list[Job]:
    """Jobs with any of ``names`` (all when empty) created in [``since``, ``before``), by id."""
    query = select(Job).order_by(col(Job.id))
    if names:
        query = query.where(col(Job.name).in_(list(names)))
    if since is not None:
        query = query.where(col(Job.created_at) >= since)
    if before is not None:
        query = query.where(col(Job.created_at) < before)
    return list(session.execute(query).scalars().all())


def last_event(session: Session, job_id: int, kind: str) -> Event | None:
    """The job's newest audit-trail line of ``kind``, or None."""
    query = (
        select(Event)
        .where(col(Event.job_id) == job_id, col(Event.kind) == kind)
        .order_by(col(Event.id).desc())
        .limit(1)
    )
    return session.execute(query).scalars().first()


def count_in_active_jobs(session: Session) -> int:
    """How many slots, in any state, the jobs under way have: the batch being worked."""
    query = (
        select(func.count())
        .select_from(Activation)
        .join(Job, col(Job.id) == col(Activation.job_id))
        .where(col(Job.status) == JobStatus.ACTIVE)
    )
    return int(session.execute(query).scalar_one())


def count_in_state(session: Session, state: State) -> int:
    """How many slots, across all jobs, are in ``state``."""
    query = select(func.count()).select_from(Activation).where(col(Activation.state) == state)
    return int(session.execute(query).scalar_one())


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


# --- spend: one rule, in the database -----------------------------------------------------

# Money charged and not refunded: every slot with a cost (codes received, expired, orders in
# flight), but a cancelled one, whose charge came back. Every spend figure is this sum.
CHARGED = and_(
    col(Activation.cost_micros).is_not(None), col(Activation.state).not_in([State.CANCELLED])
)


def _spend(job_id: int, *by: Any) -> Select[Any]:
    """The job's spend, one row per value of ``by`` (one row in all without it)."""
    return (
        select(*by, func.coalesce(func.sum(col(Activation.cost_micros)), 0))
        .where(col(Activation.job_id) == job_id, CHARGED)
        .group_by(*by)
    )


def spend_micros(session: Session, job_id: int) -> int:
    """Money the job has spent and not had refunded (codes received, expired, in flight)."""
    return int(session.execute(_spend(job_id)).scalar_one())


def charged_micros_by_slot(session: Session, job_ids: Sequence[int]) -> dict[int, int]:
    """What each slot of the jobs counts in ``spend_micros``, by slot id; a slot absent was
    charged nothing, or had its charge refunded."""
    query = select(col(Activation.id), col(Activation.cost_micros)).where(
        col(Activation.job_id).in_(list(job_ids)), CHARGED
    )
    return {int(slot): int(cost) for slot, cost in session.execute(query).all()}


def spend_micros_by_target(session: Session, job_id: int) -> dict[int, int]:
    """What ``spend_micros`` counts, per target of the job (targets that spent nothing absent)."""
    rows = session.execute(_spend(job_id, col(Activation.target_id))).all()
    return {int(target): int(spent) for target, spent in rows}


# Money charged and then refunded: a cancelled order's cost (the other side of CHARGED).
_REFUNDED = and_(col(Activation.cost_micros).is_not(None), col(Activation.state) == State.CANCELLED)


def money_by_service_country(
    session: Session, job_id: int
) -> dict[tuple[int, int | None], tuple[int, int]]:
    """Per (service, country) the job's slots chose (country None: none chosen): what
    ``spend_micros`` counts, and what was refunded."""
    cost, service, country = (
        col(Activation.cost_micros),
        col(Activation.service_id),
        col(Activation.country_id),
    )
    query = (
        select(
            service,
            country,
            func.coalesce(func.sum(case((CHARGED, cost), else_=0)), 0),
            func.coalesce(func.sum(case((_REFUNDED, cost), else_=0)), 0),
        )
        .where(col(Activation.job_id) == job_id)
        .group_by(service, country)
    )
    return {
        (int(s), None if c is None else int(c)): (int(spent), int(refunded))
        for s, c, spent, refunded in session.execute(query).all()
    }


# Why an order ended without a code says something about its country only when the code did
# not come in time; a cancel of ours (job cancelled, target met, over the cap) says nothing.
_CODELESS = and_(
    or_(col(Activation.state) == State.CANCELLED, col(Activation.state) == State.EXPIRED),
    or_(col(Activation.cancel_reason).is_(None), col(Activation.cancel_reason) == "timeout"),
)


def outcomes_by_country(
    session: Session, service_id: int, *, since: datetime
) -> dict[int, tuple[int, int]]:
    """Per country, the orders of a service bought since ``since`` that brought their code,
    and those that ended without one for want of it: ``{country_id: (received, codeless)}``."""
    query = (
        select(
            col(Activation.country_id),
            func.count().filter(col(Activation.state) == State.RECEIVED),
            func.count().filter(_CODELESS),
        )
        .where(
            col(Activation.service_id) == service_id,
            col(Activation.country_id).is_not(None),
            col(Activation.ordered_at) >= since,
        )
        .group_by(col(Activation.country_id))
    )
    return {
        int(country): (int(received), int(codeless))
        for country, received, codeless in session.execute(query).all()
    }


def target_state_tally(session: Session, target_id: int) -> dict[State, int]:
    """How many of one target's slots are in each state (every state present, maybe 0)."""
    query = (
        select(col(Activation.state), func.count())
        .where(col(Activation.target_id) == target_id)
        .group_by(col(Activation.state))
    )
    counts = dict.fromkeys(State, 0)
    counts.update({State(state): int(n) for state, n in session.execute(query).all()})
    return counts


def received_by_target(session: Session, target_ids: Collection[int]) -> dict[int, int]:
    """How many codes each of the given targets has received."""
    if not target_ids:
        return {}
    query = (
        select(col(Activation.target_id), func.count())
        .where(
            col(Activation.target_id).in_(list(target_ids)),
            col(Activation.state) == State.RECEIVED,
        )
        .group_by(col(Activation.target_id))
    )
    return {int(target): int(n) for target, n in session.execute(query).all()}


def last_slot(session: Session, job_id: int) -> tuple[int, int]:
    """The job's highest slot number, and how many slots the job has."""
    query = select(func.max(col(Activation.slot)), func.count()).where(
        col(Activation.job_id) == job_id
    )
    top, count = session.execute(query).one()
    return (int(top) if top is not None else -1), int(count)


def live_slots_of_target(session: Session, target_id: int) -> Sequence[Activation]:
    """The target's slots not yet ended."""
    query = select(Activation).where(
        col(Activation.target_id) == target_id,
        or_(*(col(Activation.state) == state for state in sorted(LIVE_STATES))),
    )
    return session.execute(query).scalars().all()


def waiting_by_country(session: Session, service_id: int) -> dict[int, int]:
    """Numbers of the service being bought or waiting for their code, per country."""
    query = (
        select(col(Activation.country_id), func.count())
        .where(
            col(Activation.service_id) == service_id,
            col(Activation.country_id).is_not(None),
            or_(col(Activation.state) == State.ORDERING, col(Activation.state) == State.WAITING),
        )
        .group_by(col(Activation.country_id))
    )
    return {int(country): int(n) for country, n in session.execute(query).all()}


def last_outcomes(
    session: Session,
    *,
    limit: int,
    since: datetime,
    recent: datetime,
    service_id: int | None = None,
) -> dict[tuple[int, int], list[tuple[bool, datetime, str, str]]]:
    """The last ``limit`` ended orders per (service, country), the last bought first: whether
    each came without a code (as ``_CODELESS`` counts), when it finished, the country's and
    the service's name. Only orders that brought their code or ended without one for want of
    it, finished since ``since``, in (service, country) pairs with such a code-less order
    finished since ``recent`` (the others cannot have an open circuit breaker); one service or
    all. In the order they were bought, not ended: a code comes within seconds and a code-less
    order ends at its timeout, so by their ends the misses of orders bought together would
    always look like a run."""
    ended = or_(col(Activation.state) == State.RECEIVED, _CODELESS)
    scope = [
        col(Activation.country_id).is_not(None),
        col(Activation.finished_at).is_not(None),
        col(Activation.finished_at) >= since,
    ]
    if service_id is not None:
        scope.append(col(Activation.service_id) == service_id)
    pair = (col(Activation.service_id), col(Activation.country_id))
    suspects = (
        select(*pair)
        .where(*scope, _CODELESS, col(Activation.finished_at) >= recent)
        .group_by(*pair)
        .subquery()
    )
    ranked = (
        select(
            col(Activation.service_id).label("service_id"),
            col(Activation.country_id).label("country_id"),
            _CODELESS.label("codeless"),
            col(Activation.finished_at).label("finished_at"),
            col(Activation.country_name).label("country_name"),
            col(Target.service_name).label("service_name"),
            func.row_number()
            .over(
                partition_by=pair,
                order_by=(col(Activation.ordered_at).desc(), col(Activation.id).desc()),
            )
            .label("place"),
        )
        .join(Target, col(Target.id) == col(Activation.target_id))
        .join(
            suspects,
            and_(
                suspects.c.service_id == col(Activation.service_id),
                suspects.c.country_id == col(Activation.country_id),
            ),
        )
        .where(*scope, ended)
        .subquery()
    )
    query = (
        select(
            ranked.c.service_id,
            ranked.c.country_id,
            ranked.c.codeless,
            ranked.c.finished_at,
            ranked.c.country_name,
            ranked.c.service_name,
        )
        .where(ranked.c.place <= limit)
        .order_by(ranked.c.service_id, ranked.c.country_id, ranked.c.place)
    )
    runs: dict[tuple[int, int], list[tuple[bool, datetime, str, str]]] = {}
    for service, country, codeless, finished_at, country_name, service_name in session.execute(
        query
    ).all():
        runs.setdefault((int(service), int(country)), []).append(
            (bool(codeless), finished_at, str(country_name or country), str(service_name))
        )
    return runs


# --- the money gauges of /metrics, read at scrape time --------------------------------------
