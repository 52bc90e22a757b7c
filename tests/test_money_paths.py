"""Rare money paths, in one process with a fake clock: over the cap, in doubt, unseen cancels."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from orchestrator.db import store
from orchestrator.db.engine import transaction
from orchestrator.db.models import Activation, Job, State
from orchestrator.errors import Throttled
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.purchase import place
from orchestrator.lifecycle.resolve_in_doubt import resolve_in_doubt
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.lifecycle.settle import cancel, check
from orchestrator.money import to_micros
from orchestrator.provider.ratelimit import Priority
from orchestrator.sandbox.config import SandboxConfig
from tests.inprocess import FakeClock, inprocess_runtime, plan_job

PROVIDER = SandboxConfig(
    seed=1, code_delay=(3.0, 3.0), never_ratio=0.0, cancel_min_age=5, expiry=60
)


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEGITSMS_API_KEY", "LEGITSMS_BASE_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def slot(engine: Engine, slot_id: int) -> Activation:
    with Session(engine) as session:
        row = session.get(Activation, slot_id)
        assert row is not None
        return row


def test_a_charge_above_the_cap_is_cancelled_as_soon_as_the_provider_allows(tmp_path: Path) -> None:
    no_codes = replace(PROVIDER, never_ratio=1.0)
    with inprocess_runtime(tmp_path, no_codes, price_cache_ttl=3600) as (rt, simulator, clock):
        [slot_id] = plan_job(rt.engine, quantity=1)  # Telegram, UK: the simulator charges 1.55
        prices = rt.prices.get(1003)
        # The price moved after we looked: our copy says 1.00, the charge will be 1.55.
        stale = {cid: replace(p, cost=Decimal("1.00")) for cid, p in prices.items()}
        rt.prices._entries[1003] = (rt.prices._entries[1003][0], stale)
        with Session(rt.engine) as session:
            row = session.get(Activation, slot_id)
            assert row is not None
            row.cap_micros = to_micros(Decimal("1.20"))
            session.add(row)
            session.commit()

        nudges = place(rt, slot_id)
        bought = slot(rt.engine, slot_id)
        assert bought.state is State.CANCELLING
        assert bought.cancel_reason == "over_cap"
        assert nudges == [Nudge(Action.CANCEL, slot_id, 5.0)]

        clock.advance(6.5)
        cancel(rt, slot_id)

        assert slot(rt.engine, slot_id).state is State.CANCELLED
        [order] = simulator.ledger.orders()
        assert order.refunded
        assert simulator.ledger.snapshot(clock.epoch())["totals"]["net_spend"] == "0.00"


def test_an_in_doubt_slot_is_never_bought_again_until_a_human_resolves_it(tmp_path: Path) -> None:
    faulty = replace(PROVIDER, fault_drop_order=1.0)
    with inprocess_runtime(tmp_path, faulty) as (rt, simulator, clock):
        [slot_id] = plan_job(rt.engine, quantity=1, budget=Decimal("10"))
        place(rt, slot_id)
        assert slot(rt.engine, slot_id).state is State.IN_DOUBT
        for _ in range(3):
            clock.advance(120)
            assert place(rt, slot_id) == []
        assert len(simulator.ledger.orders()) == 1, "bought once, never again"
        with Session(rt.engine) as session:
            job = session.get(Job, 1)
            assert job is not None
            assert job.reserved_micros == to_micros(Decimal("2.00")), "held at the cap"

        [order] = simulator.ledger.orders()
        nudges = resolve_in_doubt(rt, slot_id, order_id=order.order_id)
        assert nudges == [Nudge(Action.CHECK, slot_id)]
        # Long past its timeout: the check gives it up, and the cancel finds the code instead.
        check(rt, slot_id)
        cancel(rt, slot_id)

        resolved = slot(rt.engine, slot_id)
        assert resolved.state is State.RECEIVED
        assert resolved.code == order.code


def test_an_in_doubt_slot_resolved_as_not_bought_releases_its_budget(tmp_path: Path) -> None:
    faulty = replace(PROVIDER, fault_5xx=1.0)
    with inprocess_runtime(tmp_path, faulty, price_cache_ttl=3600) as (rt, simulator, _clock):
        [slot_id] = plan_job(rt.engine, quantity=1, budget=Decimal("10"))
        simulator.config = PROVIDER  # prices answer; the order itself meets the 5xx below
        rt.prices.get(1003)
        simulator.config = faulty
        place(rt, slot_id)
        assert slot(rt.engine, slot_id).state is State.IN_DOUBT

        assert resolve_in_doubt(rt, slot_id, order_id=None) == []

        assert slot(rt.engine, slot_id).state is State.FAILED
        with Session(rt.engine) as session:
            job = session.get(Job, 1)
            assert job is not None
            assert job.reserved_micros == 0


class CancelsOnly:
    """A shared limit kept booked by other workers' cancels: only a cancel's horizon reaches it."""

    def acquire(self, priority: Priority) -> None:
        if priority > Priority.CANCEL:
            raise Throttled(0.01)

    def pause(self, seconds: float) -> None:
        raise AssertionError("the simulator sends no 429 here")


NO_CODES = replace(PROVIDER, never_ratio=1.0)


def _cancel_marked_sent(rt: Runtime, clock: FakeClock) -> int:
    """One order bought, past its code timeout, whose cancel a worker marked as sent and
    then died: what became of that cancel is unknown. Returns the slot's id."""
    [slot_id] = plan_job(rt.engine, quantity=1, code_timeout=6)
    place(rt, slot_id)
    clock.advance(7)
    assert check(rt, slot_id) == [Nudge(Action.CANCEL, slot_id, 0.0)]
    with transaction(rt.engine) as session:
        assert store.mark_cancel_sent(session, slot(rt.engine, slot_id), clock.now)
    return slot_id


def test_a_cancel_that_went_through_unrecorded_is_reconciled_while_polls_are_crowded_out(
    tmp_path: Path,
) -> None:
    """A worker killed after its cancel reached the provider leaves only ``cancel_sent_at``.

    The next attempt meets ``cancel_failed`` and must read /status to tell a refund from a
    late code. That read is part of the cancel: when cancels keep the shared limit booked
    beyond what a poll may book, it must still get its slot, or the slot loops (cancel,
    refused status read, cancel again) until the order is past the provider's expiry.
    """
    with inprocess_runtime(tmp_path, NO_CODES) as (rt, simulator, clock):
        slot_id = _cancel_marked_sent(rt, clock)
        # The killed worker: it marked the cancel as sent, and the provider acted on it.
        bought = slot(rt.engine, slot_id)
        assert bought.order_id is not None
        rt.client.cancel(bought.order_id)

        rt.client._throttle = CancelsOnly()
        assert cancel(rt, slot_id) == []

        assert slot(rt.engine, slot_id).state is State.CANCELLED
        [order] = simulator.ledger.orders()
        assert order.refunded


def test_a_refused_cancel_after_an_unseen_one_past_expiry_is_counted_as_spent(
    tmp_path: Path,
) -> None:
    """A worker killed before its cancel left leaves ``cancel_sent_at`` as if it had gone.

    Met after the provider's expiry, the next cancel's ``cancel_failed`` is the expiry's, and
    /status shows a code still awaited either way: the order was not refunded, and taking
    the refusal for the unseen cancel's effect would count its price as refunded.
    """
    with inprocess_runtime(tmp_path, NO_CODES) as (rt, simulator, clock):
        slot_id = _cancel_marked_sent(rt, clock)
        clock.advance(60)  # the provider's expiry passes; the cancel never reached it

        assert cancel(rt, slot_id) == []

        ended = slot(rt.engine, slot_id)
        [order] = simulator.ledger.orders()
        assert not order.refunded
        assert ended.state is State.EXPIRED, ended
        assert ended.reserved_micros == ended.cost_micros, "its price stays spent"
