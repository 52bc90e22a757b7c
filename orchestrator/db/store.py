"""Every state change, as a compare-and-set UPDATE in the caller's session; budget reservation.

The reads are in ``queries``.

Functions take ``session`` and never commit: the caller decides the transaction, so a state
change and the budget it moves are committed together or not at all.

Text stored here (errors, provider names, the audit trail) goes through ``redact.mask`` on the
way in: a provider message that repeats the API key is stored with the key hidden.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BindParameter,
    CursorResult,
    Executable,
    Update,
    bindparam,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlmodel import Session, col

from orchestrator.db import prepared, queries
from orchestrator.db.models import (
    FINAL_STATES,
    LIVE_STATES,
    Activation,
    Event,
    Job,
    JobPlan,
    JobStatus,
    ScheduleFire,
    State,
    Target,
    utcnow,
)
from orchestrator.errors import JobOverlap
from orchestrator.redact import mask, mask_data

# The slot got its code, or its refund: an ``error`` left from the way there would read as
# the outcome's (a received row saying ``cannot_cancel``), so it is cleared.
ENDED_WELL = frozenset({State.RECEIVED, State.CANCELLED})


def record(
    session: Session, job_id: int, kind: str, activation_id: int | None = None, **detail: Any
) -> None:
    """Append one line to the audit trail."""
    params = {
        "job_id": job_id,
        "activation_id": activation_id,
        "at": utcnow(),
        "kind": kind,
        "detail": json.dumps(mask_data(detail), default=str, sort_keys=True),
    }
    # inline(): no RETURNING of the new id, which nothing reads.
    _execute(session, "record", lambda: insert(Event).inline(), params)


def _update(table: type[Job] | type[Activation]) -> Update:
    # Plain SQL semantics: the ORM must not rewrite in-memory objects behind the caller's back
    # (move() compares against the values the caller read).
    return update(table).execution_options(synchronize_session=False)


# The hot writes (a few per number) are built once per shape, with bound parameters, and run
# on the session's connection, compiled once per database (see prepared.py): building, hashing
# and routing a statement through the ORM costs many times the CPU SQLite spends running it,
# and none of them needs the ORM's unit of work.
def _execute(
    session: Session, shape: Hashable, build: Callable[[], Executable], params: Mapping[str, Any]
) -> CursorResult[Any]:
    return prepared.execute(session.connection(), shape, prepared.built(shape, build), params)


def _move_statement(columns: tuple[str, ...], states: int) -> Executable:
    # One equality per expected state, not an expanding IN: SQLAlchemy rewrites the SQL of an
    # expanding parameter at every execution.
    return (
        update(Activation)
        .where(
            col(Activation.id) == bindparam("p_id"),
            or_(*(col(Activation.state) == bindparam(f"p_state{i}") for i in range(states))),
            col(Activation.reserved_micros) == bindparam("p_reserved"),
        )
        .values({name: bindparam(f"v_{name}") for name in columns})
    )


def _move_row(
    session: Session, act_id: int, states: Sequence[State], reserved: int, changes: dict[str, Any]
) -> bool:
    """The compare-and-set UPDATE of one slot: True if it was in ``states`` with ``reserved``."""
    columns = tuple(sorted(changes))
    params: dict[str, Any] = {"p_id": act_id, "p_reserved": reserved}
    params |= {f"p_state{i}": state for i, state in enumerate(states)}
    params |= {f"v_{name}": changes[name] for name in columns}
    shape = ("move", columns, len(states))
    result = _execute(session, shape, lambda: _move_statement(columns, len(states)), params)
    return _rowcount(result) == 1


def _reserve_within_budget_statement() -> Executable:
    delta: BindParameter[int] = bindparam("p_delta")
    return (
        update(Job)
        .where(
            col(Job.id) == bindparam("p_id"),
            col(Job.status) == JobStatus.ACTIVE,
            col(Job.cancel_requested_at).is_(None),
            or_(
                col(Job.budget_micros).is_(None),
                col(Job.reserved_micros) + delta <= col(Job.budget_micros),
            ),
        )
        .values(reserved_micros=col(Job.reserved_micros) + delta)
    )


def _reserve_statement() -> Executable:
    return (
        update(Job)
        .where(col(Job.id) == bindparam("p_id"))
        .values(reserved_micros=col(Job.reserved_micros) + bindparam("p_delta"))
    )


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)


def move(
    session: Session,
    act: Activation,
    to: State,
    *,
    event: str,
    expect: Collection[State] | None = None,
    reserve: int | None = None,
    note: Mapping[str, Any] | None = None,
    **values: Any,
) -> bool:
    """Move a slot from the state it was read in (or one of ``expect``) to ``to``.

    Returns False, changing nothing, when another worker moved it first. ``reserve`` sets the
    budget the slot holds; the job's total follows by the difference, in the same transaction.
    ``note``: more for the event's detail (who settled it, say), beside the values written.
    """
    assert act.id is not None
    states = list(expect) if expect is not None else [act.state]
    now = utcnow()
    values = {k: mask(v) if isinstance(v, str) else v for k, v in values.items()}
    changes: dict[str, Any] = {"state": to, "updated_at": now, **values}
    if to in FINAL_STATES:
        changes.setdefault("finished_at", now)
        changes.setdefault("next_action_at", None)
    if to in ENDED_WELL:
        # A refused cancel or a failed poll on the way is no error of the outcome.
        changes.setdefault("error", None)
    if reserve is not None:
        changes["reserved_micros"] = reserve
    if not _move_row(session, act.id, states, act.reserved_micros, changes):
        return False
    if reserve is not None and reserve != act.reserved_micros:
        delta = reserve - act.reserved_micros
        _execute(session, "reserve", _reserve_statement, {"p_id": act.job_id, "p_delta": delta})
    record(session, act.job_id, event, act.id, state=to.value, **_loggable(values), **(note or {}))
    for key, value in changes.items():
        setattr(act, key, value)
    return True


def _loggable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in {"next_action_at", "updated_at"}}


class Claim(StrEnum):
    """What came of trying to claim a slot."""

    CLAIMED = "claimed"  # ours: commit, then send POST /order once
    TAKEN = "taken"  # another worker claimed it first
    NO_BUDGET = "no_budget"  # the job's budget cannot hold the cap (or the job is cancelled)


def claim(
    session: Session,
    act: Activation,
    *,
    country_id: int,
    country_name: str,
    next_action_at: datetime,
    now: datetime,
    quoted_micros: int | None = None,
) -> Claim:
    """Mark the slot ``ordering`` and reserve its cap against the job budget, atomically.

    Unless CLAIMED, nothing changed; nor is anything else in the caller's transaction undone
    (it may carry other slots' writes). The caller commits before sending ``POST /order``.
    """
    assert act.id is not None
    country_name = mask(country_name)
    changes = {
        "state": State.ORDERING,
        "reserved_micros": act.cap_micros,
        "country_id": country_id,
        "country_name": country_name,
        "claimed_at": now,
        "updated_at": now,
        "next_action_at": next_action_at,
        "quoted_micros": quoted_micros,
    }
    if not _move_row(session, act.id, [State.PLANNED], 0, changes):
        return Claim.TAKEN
    # The slot first, then the job: every transaction locks rows in that order (PostgreSQL).
    budget = {"p_id": act.job_id, "p_delta": act.cap_micros}
    reserved = _execute(session, "reserve_within_budget", _reserve_within_budget_statement, budget)
    if _rowcount(reserved) != 1:
        # Put the slot back as it was read, leaving the rest of the transaction alone.
        before = {name: getattr(act, name) for name in changes}
        _move_row(session, act.id, [State.ORDERING], act.cap_micros, before)
        return Claim.NO_BUDGET
    record(session, act.job_id, "slot_claimed", act.id, country_id=country_id)
    act.state = State.ORDERING
    act.reserved_micros = act.cap_micros
    act.country_id, act.country_name, act.claimed_at = country_id, country_name, now
    act.quoted_micros = quoted_micros
    return Claim.CLAIMED


def mark_cancel_sent(session: Session, act: Activation, when: datetime) -> bool:
    """Note, before sending it, that a cancel is on its way (see Activation.cancel_sent_at)."""
    assert act.id is not None
    changes = {"cancel_sent_at": when, "updated_at": utcnow()}
    moved = _move_row(session, act.id, [State.CANCELLING], act.reserved_micros, changes)
    act.cancel_sent_at = when
    return moved


def reschedule(
    session: Session, act: Activation, when: datetime, *, looked_at: datetime | None = None
) -> bool:
    """Note when the slot's next nudge is due, if it is still in the state it was read in;
    ``looked_at``: when a poll read the order still without its code (``code_after``)."""
    assert act.id is not None
    changes: dict[str, Any] = {"next_action_at": when, "updated_at": utcnow()}
    if looked_at is not None:
        changes["code_after"] = looked_at
    moved = _move_row(session, act.id, [act.state], act.reserved_micros, changes)
    act.next_action_at = when
    return moved


def finish_job_if_done(session: Session, job_id: int) -> bool:
    """Mark the job ended when no slot is live any more; True if this call ended it."""
    params = {"p_id": job_id, "p_now": utcnow()}
    result = _execute(session, "finish_job", _finish_job_statement, params)
    if _rowcount(result) != 1:
        return False
    record(session, job_id, "job_finished")
    return True


def _finish_job_statement() -> Executable:
    job_id: BindParameter[int] = bindparam("p_id")
    live = exists().where(
        col(Activation.job_id) == job_id,
        or_(
            *(col(Activation.state) == state for state in sorted(LIVE_STATES)),  # not an IN
            col(Activation.settle_pending).is_(True),  # in doubt, a checkpoint still to try
        ),
    )
    return (
        update(Job)
        .where(col(Job.id) == job_id, col(Job.status) == JobStatus.ACTIVE, ~live)
        .values(
            status=case(
                (col(Job.cancel_requested_at).is_(None), JobStatus.FINISHED.value),
                else_=JobStatus.CANCELLED.value,
            ),
            finished_at=bindparam("p_now"),
        )
    )


def request_job_cancel(session: Session, job: Job) -> bool:
    """Stop buying for the job; live orders get cancelled by the workers. False if ended."""
    result = session.execute(
        _update(Job)
        .where(col(Job.id) == job.id, col(Job.status) == JobStatus.ACTIVE)
        .values(cancel_requested_at=func.coalesce(col(Job.cancel_requested_at), utcnow()))
    )
    if _rowcount(result) != 1:
        return False
    assert job.id is not None
    record(session, job.id, "job_cancel_requested")
    return True


def submit_job(
    session: Session, job: JobPlan, *, source: str, allow_overlap: bool = False
) -> tuple[Job, list[int]]:
    """Plan the job unless one of its name is still active (then ``JobOverlap``).

    The one place the overlap rule lives: ``submit``, ``run`` and the scheduler all come here.
    The check and the insert must be one atomic step, or two submits at once both find no
    active job and both plan one (every number bought twice). On SQLite the transaction's
    BEGIN IMMEDIATE already lets one writer in at a time; on PostgreSQL a lock on the name,
    held to the end of the transaction, makes a second submit wait, then see the first's job.
    """
    if not allow_overlap:
        _lock_job_name(session, job.name)
        running = queries.active_job_named(session, job.name)
        if running is not None:
            # No advice here: only the commands that have a way round it know theirs.
            raise JobOverlap(
                f"job {running.id} ({job.name!r}) is still active; not submitting another"
            )
    return create_job(session, job, source=source)


def _lock_job_name(session: Session, name: str) -> None:
    """Hold a lock on ``name`` until the caller's transaction ends (PostgreSQL only)."""
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return  # SQLite: the transaction already holds the database's one write lock
    # A transaction-scoped advisory lock on a 64-bit key from the name: nothing to clean up,
    # and submits of other names do not wait. The query after it runs in a new READ
    # COMMITTED snapshot (the engines' level), so it sees a job committed while we waited.
    digest = hashlib.blake2b(f"job-name:{name}".encode(), digest_size=8).digest()
    key = int.from_bytes(digest, "big", signed=True)
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def create_job(session: Session, job: JobPlan, *, source: str) -> tuple[Job, list[int]]:
    """Plan the job up front: one row per number (for a codes target, per number to buy
    first; more are added as numbers end without a code), so no slot can be bought twice."""
    row = Job(
        name=job.name,
        source=mask(source),
        budget_micros=job.budget_micros,
        code_timeout=job.code_timeout,
        created_at=job.submitted_at or utcnow(),
    )
    session.add(row)
    session.flush()
    assert row.id is not None
    now = utcnow()
    slot = 0
    slots: list[dict[str, Any]] = []
    for spec in job.targets:
        target = Target(
            job_id=row.id,
            position=spec.position,
            service_id=spec.service_id,
            service_name=mask(spec.service_name),
            countries=json.dumps([[cid, mask(name)] for cid, name in spec.countries]),
            quantity=spec.quantity,
            max_price_micros=spec.max_price_micros,
            codes_wanted=spec.codes_wanted,
        )
        session.add(target)
        session.flush()
        for attempt in range(1, spec.first_slots + 1):
            slots.append(_slot_row(target, slot, attempt, now))
            slot += 1
    ids = _insert_slots(session, slots)
    record(session, row.id, "job_submitted", slots=slot, name=job.name)
    return row, ids


def add_slots(session: Session, target: Target, count: int) -> list[int]:
    """Plan ``count`` more slots for a codes target; the caller holds the job's lock
    (``lock_job``), so slot numbers cannot collide."""
    assert target.id is not None
    top, _ = queries.last_slot(session, target.job_id)
    tally = queries.target_state_tally(session, target.id)
    attempt = sum(tally.values())
    now = utcnow()
    rows = [_slot_row(target, top + 1 + i, attempt + 1 + i, now) for i in range(count)]
    ids = _insert_slots(session, rows)
    record(session, target.job_id, "slots_added", target=target.position, slots=count)
    return ids


def lock_job(session: Session, job_id: int) -> Job:
    """The job's row, locked until the transaction ends (PostgreSQL; SQLite's writer already
    holds the database): one transaction at a time plans slots for the job."""
    # populate_existing: this transaction may have changed the row (reservations) since the
    # session first loaded it; the figures read must be the row's, not the stale object's.
    query = (
        select(Job)
        .where(col(Job.id) == job_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    job: Job = session.execute(query).scalars().one()
    return job


def _slot_row(target: Target, slot: int, attempt: int, now: datetime) -> dict[str, Any]:
    return {
        "job_id": target.job_id,
        "target_id": target.id,
        "slot": slot,
        "attempt": attempt,
        "state": State.PLANNED,
        "service_id": target.service_id,
        "cap_micros": target.max_price_micros,
        "reserved_micros": 0,
        "attempts": 0,
        "cancel_attempts": 0,
        "next_action_at": now,
        "updated_at": now,
    }


def _insert_slots(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    # One multi-row INSERT, not thousands of ORM objects: a large job is planned in moments.
    planned = insert(Activation).returning(col(Activation.id), sort_by_parameter_order=True)
    return [int(i) for i in session.execute(planned, rows).scalars().all()]


def settle_fire(
    session: Session, fire_id: int, *, outcome: str, job_id: int | None, error: str | None
) -> None:
    """Record how a schedule's fire ended (its row was claimed before the submit)."""
    session.execute(
        update(ScheduleFire)
        .where(col(ScheduleFire.id) == fire_id)
        .values(outcome=outcome, job_id=job_id, error=error)
    )
