"""Orders that wait for the rate limit come back about when their turn may have come, not at
every free slot: a refusal costs a message, a read and a write, and slots still fill.

In one process with a fake clock, the limiter's real rule (tests.inprocess.FakeLimit) and the
simulator enforcing the same limit.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from orchestrator.db import store
from orchestrator.db.models import Activation
from orchestrator.errors import Throttled
from orchestrator.lifecycle import polling
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.purchase import place
from orchestrator.provider.ratelimit import Priority
from orchestrator.sandbox.config import SandboxConfig
from tests.inprocess import FakeClock, FakeLimit, inprocess_runtime, plan_job, run_broker

RATE = 5.0
NUMBERS = 60
PROVIDER = SandboxConfig(
    seed=9, code_delay=(1.0, 3.0), never_ratio=0.0, cancel_min_age=5, expiry=1200, rate_limit=RATE
)


class CountingLimit(FakeLimit):
    """FakeLimit that counts its refusals by priority."""

    def __init__(self, clock: FakeClock, rate: float) -> None:
        super().__init__(clock, rate)
        self.refused: Counter[Priority] = Counter()

    def acquire(self, priority: Priority) -> None:
        try:
            super().acquire(priority)
        except Throttled:
            self.refused[priority] += 1
            raise


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEGITSMS_API_KEY", "LEGITSMS_BASE_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_orders_waiting_for_the_rate_limit_are_refused_a_few_times_each_and_fill_its_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The count of orders waiting is reused for seconds of real time, which the fake clock
    # outruns many times over; read afresh, it is as old here as it would be in a worker.
    monkeypatch.setattr(polling, "COUNT_REFRESH", 0.0)
    clock = FakeClock()
    limit = CountingLimit(clock, RATE)
    settings = {
        "rate_limit": RATE,
        "poll_interval": 600,
        "provider_expiry": 1200,
        "price_cache_ttl": 3600,
    }
    with inprocess_runtime(tmp_path, PROVIDER, throttle=limit, clock=clock, **settings) as (
        rt,
        sim,
        _,
    ):
        start = clock.epoch()
        slots = plan_job(rt.engine, quantity=NUMBERS, code_timeout=600)
        run_broker(rt, clock, [Nudge(Action.PLACE, s) for s in slots], horizon=NUMBERS / RATE + 5)

        with Session(rt.engine) as session:
            rows = session.exec(select(Activation).where(col(Activation.ordered_at).is_not(None)))
            ordered = sorted(r.ordered_at.timestamp() for r in rows if r.ordered_at)
    assert len(ordered) == NUMBERS == len(sim.ledger.orders())
    # When every order came back at the next free slot: 30 refusals a number here, growing
    # with the batch (78 in bench scenario (b)'s 200). Now about 6.
    assert limit.refused[Priority.ORDER] <= 10 * NUMBERS
    # The slots still filled: the last order within 10% of the earliest it could go.
    assert ordered[-1] - start <= 1.1 * NUMBERS / RATE


class RecordingLimit:
    """Grants every slot at once; notes each priority asked for, and each POST's place."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def acquire(self, priority: Priority) -> None:
        self.asked.append(priority.name)

    def pause(self, seconds: float) -> None:
        raise AssertionError("no 429 here")


@pytest.mark.parametrize(("claim_seconds", "last"), [(0.0, ["ORDER"]), (0.2, ["ORDER", "POLL"])])
def test_an_order_whose_claim_outlasted_its_slot_takes_another_before_it_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claim_seconds: float, last: list[str]
) -> None:
    # Sent late, the POST would come less than an interval before the request booked after
    # it: a strict provider (0.5 requests/s, one token) answers that one 429.
    limit = RecordingLimit()
    claim = store.claim

    def slow_claim(*args: Any, **kwargs: Any) -> store.Claim:
        time.sleep(claim_seconds)  # the database's write lock held by another writer
        return claim(*args, **kwargs)

    monkeypatch.setattr(store, "claim", slow_claim)
    with inprocess_runtime(
        tmp_path, PROVIDER, throttle=limit, rate_limit=0.5, price_cache_ttl=3600
    ) as (rt, sim, _):
        (slot,) = plan_job(rt.engine, quantity=1, code_timeout=600)
        sent: list[list[str]] = []
        order = rt.client.order

        def order_noting(*args: Any, **kwargs: Any) -> Any:
            sent.append(list(limit.asked))
            return order(*args, **kwargs)

        monkeypatch.setattr(rt.client, "order", order_noting)
        place(rt, slot)
    assert len(sim.ledger.orders()) == 1
    # The slots taken by the time the POST went (a price read took one before the order's).
    (taken,) = sent
    assert taken[-len(last) :] == last
    assert taken.count("POLL") == len(last) - 1
