"""The store's compare-and-set moves and budget reservation, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from sqlalchemy import Engine, update
from sqlmodel import Session

from orchestrator.db import queries, store
from orchestrator.db.engine import SQLITE_CACHE_KIB, make_engine, reading, transaction
from orchestrator.db.models import Activation, Job, JobStatus, State, utcnow
from orchestrator.errors import JobNotFound
from orchestrator.money import to_micros
from tests.inprocess import plan_job


def plan(engine: Engine, *, quantity: int, budget: str | None, cap: str = "2.00") -> list[int]:
    return plan_job(
        engine,
        quantity=quantity,
        budget=Decimal(budget) if budget else None,
        cap=Decimal(cap),
        name="store",
        code_timeout=60.0,
    )


def claim(engine: Engine, slot: int) -> store.Claim:
    with transaction(engine) as session:
        act = queries.get_activation(session, slot)
        assert act is not None
        return store.claim(
            session, act, country_id=16, country_name="UK", next_action_at=utcnow(), now=utcnow()
        )


def reserved(engine: Engine) -> int:
    with Session(engine) as session:
        job = session.get(Job, 1)
        assert job is not None
        return job.reserved_micros


def test_a_slot_can_be_claimed_only_once(engine: Engine) -> None:
    [slot] = plan(engine, quantity=1, budget=None)
    assert claim(engine, slot) is store.Claim.CLAIMED
    assert claim(engine, slot) is store.Claim.TAKEN
    assert reserved(engine) == to_micros(Decimal("2.00"))


def test_a_stale_copy_of_a_slot_cannot_claim_it_again(engine: Engine) -> None:
    [slot] = plan(engine, quantity=1, budget=None)
    with Session(engine) as session:
        stale = session.get(Activation, slot)
        assert stale is not None
        session.expunge(stale)
    assert claim(engine, slot) is store.Claim.CLAIMED
    with transaction(engine) as session:
        outcome = store.claim(
            session, stale, country_id=16, country_name="UK", next_action_at=utcnow(), now=utcnow()
        )
    assert outcome is store.Claim.TAKEN
    assert reserved(engine) == to_micros(Decimal("2.00"))


def test_the_budget_holds_at_most_what_it_allows_and_a_refused_claim_changes_nothing(
    engine: Engine,
) -> None:
    slots = plan(engine, quantity=3, budget="4.50", cap="2.00")
    assert [claim(engine, s) for s in slots] == [
        store.Claim.CLAIMED,
        store.Claim.CLAIMED,
        store.Claim.NO_BUDGET,
    ]
    assert reserved(engine) == to_micros(Decimal("4.00"))
    with Session(engine) as session:
        third = session.get(Activation, slots[2])
        assert third is not None
        assert third.state is State.PLANNED
        assert third.reserved_micros == 0


def test_a_move_from_a_state_the_slot_has_left_changes_nothing(engine: Engine) -> None:
    [slot] = plan(engine, quantity=1, budget=None)
    claim(engine, slot)
    with transaction(engine) as session:
        act = queries.get_activation(session, slot)
        assert act is not None
        assert store.move(session, act, State.IN_DOUBT, event="test")
    with transaction(engine) as session:
        act = queries.get_activation(session, slot)
        assert act is not None
        session.expunge(act)
        act.state = State.ORDERING  # what a worker holding an old copy believes
        assert not store.move(session, act, State.FAILED, event="test", reserve=0)
    assert reserved(engine) == to_micros(Decimal("2.00"))


def test_releasing_a_reservation_moves_the_job_total_with_it(engine: Engine) -> None:
    [slot] = plan(engine, quantity=1, budget="10")
    claim(engine, slot)
    with transaction(engine) as session:
        act = queries.get_activation(session, slot)
        assert act is not None
        store.move(session, act, State.FAILED, event="test", reserve=0)
        store.finish_job_if_done(session, act.job_id)
    assert reserved(engine) == 0
    with Session(engine) as session:
        job = session.get(Job, 1)
        assert job is not None
        assert job.status is JobStatus.FINISHED


def test_a_job_is_found_by_id_or_by_name_the_newest_first(engine: Engine) -> None:
    plan(engine, quantity=1, budget=None)
    plan(engine, quantity=1, budget=None)
    with Session(engine) as session:
        assert queries.get_job(session, "1").id == 1
        assert queries.get_job(session, "store").id == 2
        with pytest.raises(JobNotFound):
            queries.get_job(session, "nope")


def test_a_read_never_waits_for_a_writer(engine: Engine) -> None:
    [slot_id] = plan(engine, quantity=1, budget=None)
    began = time.monotonic()
    with transaction(engine) as writer:  # holds SQLite's write lock (PostgreSQL: a row lock)
        writer.execute(update(Activation).values(error="being written"))
        with reading(engine) as session:
            row = queries.get_activation(session, slot_id)
    assert row is not None and row.error is None  # the last committed state
    assert time.monotonic() - began < 1.0


def test_sqlite_connections_keep_a_small_page_cache(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            kib = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
        assert kib == -SQLITE_CACHE_KIB  # negative: KiB, not pages
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("end", "error_left"),
    [
        (State.RECEIVED, None),
        (State.CANCELLED, None),
        (State.EXPIRED, "cannot_cancel"),  # no code and no refund: the last error says why
    ],
)
def test_an_error_met_on_the_way_is_cleared_when_the_slot_ends_well(
    engine: Engine, end: State, error_left: str | None
) -> None:
    [slot] = plan(engine, quantity=1, budget=None)
    claim(engine, slot)
    with transaction(engine) as session:
        act = queries.get_activation(session, slot)
        assert act is not None
        assert store.move(session, act, State.CANCELLING, event="test", error="cannot_cancel")
    with transaction(engine) as session:
        act = queries.get_activation(session, slot)
        assert act is not None and act.error == "cannot_cancel"
        assert store.move(session, act, end, event="test")
    with reading(engine) as session:
        act = queries.get_activation(session, slot)
        assert act is not None
        assert act.error == error_left
