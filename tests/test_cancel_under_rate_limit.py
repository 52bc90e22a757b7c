"""Cancels under a binding rate limit: a refusal is read, not repeated, and nobody starves.

In one process with a fake clock, the limiter's real rule (tests.inprocess.FakeLimit) at the
provider's default 0.5 requests per second, and the simulator enforcing that limit too.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from orchestrator.db import queries, store
from orchestrator.db.engine import transaction
from orchestrator.db.models import Activation, CancelAnswer, Event, Job, JobStatus, State
from orchestrator.errors import Throttled
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.purchase import place
from orchestrator.lifecycle.settle import cancel
from orchestrator.lifecycle.sweep import sweep
from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.simulator import Simulator
from tests.inprocess import (
    FakeClock,
    FakeLimit,
    inprocess_runtime,
    plan_job,
    run_broker,
    simulator_transport,
)

RATE = 0.5
PROVIDER = SandboxConfig(
    seed=5,
    code_delay=(1.0, 3.0),
    never_ratio=0.0,
    cancel_min_age=5,
    expiry=1200,
    rate_limit=RATE,
)
SETTINGS: dict[str, Any] = {
    "rate_limit": RATE,
    "poll_interval": 600,  # polls far apart: the codes arrive unread, as in the report
    "cancel_min_age": 5,
    "provider_expiry": 1200,
    "expiry_margin": 90,
    "sweep_interval": 20,
    "price_cache_ttl": 3600,
}


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEGITSMS_API_KEY", "LEGITSMS_BASE_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _rows(engine: Engine, job_id: int) -> list[Activation]:
    with Session(engine) as session:
        query = select(Activation).where(col(Activation.job_id) == job_id)
        return list(session.exec(query.order_by(col(Activation.id))).all())


def _events(engine: Engine, kind: str) -> Counter[int]:
    with Session(engine) as session:
        rows = session.exec(select(Event).where(col(Event.kind) == kind)).all()
    return Counter(e.activation_id or 0 for e in rows)


def test_cancelling_a_job_whose_codes_came_unread_stores_every_code_and_starves_no_one(
    tmp_path: Path,
) -> None:
    """The reported livelock: each cancel refused (cannot_cancel), its /status read throttled
    because the cancel had just taken the slot, the cancel sent again... for 18 minutes, while
    another job bought nothing. Now a refusal is followed by the read, whatever it waits."""
    clock = FakeClock()
    limit = FakeLimit(clock, RATE)
    with inprocess_runtime(tmp_path, PROVIDER, throttle=limit, clock=clock, **SETTINGS) as (
        rt,
        sim,
        _,
    ):
        slots = plan_job(rt.engine, quantity=4, name="first", code_timeout=600)
        run_broker(rt, clock, [Nudge(Action.PLACE, s) for s in slots], horizon=20)
        assert {r.state for r in _rows(rt.engine, 1)} == {State.WAITING}
        clock.advance(6)  # the codes arrive at the provider; nobody reads them
        with transaction(rt.engine) as session:
            assert store.request_job_cancel(session, queries.get_job(session, 1))
        nudges = sweep(rt)
        other = plan_job(rt.engine, quantity=2, name="other", code_timeout=30)
        submitted = clock.epoch()
        nudges += [Nudge(Action.PLACE, slot_id) for slot_id in other]

        run_broker(rt, clock, nudges, horizon=1500)

        first = _rows(rt.engine, 1)
        codes = {o.order_id: o.code for o in sim.ledger.orders()}
        assert [r.state for r in first] == [State.RECEIVED] * 4, [r.error for r in first]
        assert all(r.code == codes[r.order_id or ""] for r in first)
        refused = _events(rt.engine, "cancel_refused")
        assert all(refused[r.id or 0] <= 1 for r in first), refused
        # The other job bought its numbers within a minute, not after the first's orders expired.
        bought_at = [r.ordered_at for r in _rows(rt.engine, 2)]
        assert all(at is not None for at in bought_at)
        assert max(at.timestamp() for at in bought_at if at) - submitted < 60
        with Session(rt.engine) as session:
            jobs = session.exec(select(Job)).all()
        assert all(job.status is not JobStatus.ACTIVE for job in jobs)
        assert sim.ledger.snapshot(clock.epoch())["rate_limited"] == 0


def test_a_refused_cancel_is_read_before_it_is_sent_again_and_then_paced(tmp_path: Path) -> None:
    """The provider refuses cancels longer than we were told (a lock of 60 s, not 5): each
    refusal is followed by one /status read, and the cancel goes again only after it, ever
    further apart, until one takes."""
    locked = replace(PROVIDER, never_ratio=1.0, cancel_min_age=60)
    clock = FakeClock()
    limit = FakeLimit(clock, RATE)
    polled = {**SETTINGS, "poll_interval": 5}
    with inprocess_runtime(tmp_path, locked, throttle=limit, clock=clock, **polled) as (
        rt,
        sim,
        _,
    ):
        [slot_id] = plan_job(rt.engine, quantity=1, code_timeout=6)
        run_broker(rt, clock, [Nudge(Action.PLACE, slot_id)], horizon=600)

        [row] = _rows(rt.engine, 1)
        assert row.state is State.CANCELLED
        [order] = sim.ledger.orders()
        assert order.refunded
        calls = [endpoint for _, endpoint, _ in sim.ledger.requests()]
        cancels = [i for i, e in enumerate(calls) if e == "POST /set_status"]
        # Between two cancels there is always a read of the order's status.
        for a, b in itertools.pairwise(cancels):
            assert "GET /status" in calls[a + 1 : b], calls
        sent = [t for t, e, _ in sim.ledger.requests() if e == "POST /set_status"]
        gaps = [b - a for a, b in itertools.pairwise(sent)]
        assert gaps == sorted(gaps), gaps  # paced, and never closer together
        assert len(sent) <= 4, sent  # refused about 60 s: 15 + 30 s of pacing, then it takes


def test_a_read_turned_away_by_the_limit_keeps_the_slot_reading(tmp_path: Path) -> None:
    no_codes = replace(PROVIDER, never_ratio=1.0, rate_limit=0.0)
    with inprocess_runtime(tmp_path, no_codes, **SETTINGS) as (rt, _sim, clock):
        [slot_id] = plan_job(rt.engine, quantity=1, code_timeout=6)
        place(rt, slot_id)
        clock.advance(1)
        with Session(rt.engine) as session:
            row = session.get(Activation, slot_id)
            assert row is not None
            row.state, row.cancel_answer = State.CANCELLING, CancelAnswer.REFUSED
            row.next_action_at = None
            session.add(row)
            session.commit()
        rt.client._throttle = _Busy()

        [nudge] = cancel(rt, slot_id)

        assert nudge == Nudge(Action.CANCEL, slot_id, 7.0)
        [row] = _rows(rt.engine, 1)
        assert row.cancel_answer == CancelAnswer.REFUSED  # the next step is still the read
        assert row.cancel_sent_at is None


class _Busy:
    """A shared limit with no slot for anyone for the next 7 s."""

    def acquire(self, priority: object) -> None:
        raise Throttled(7.0)

    def pause(self, seconds: float) -> None:
        raise AssertionError("no 429 expected")


def test_a_cancel_whose_answer_was_lost_goes_again_within_seconds_and_its_refusal_is_the_refund(
    tmp_path: Path,
) -> None:
    """The provider cancels and refunds, but its answer is lost on the way. The read shows the
    order still waiting (/status cannot tell cancelled from waiting), and the cancel goes
    again: within seconds, not at a refusal's pace, so that the provider's refusal of it comes
    well before its expiry and reads as the refund it was, never as a maybe-expired order."""
    no_codes = replace(PROVIDER, never_ratio=1.0)
    clock = FakeClock()
    limit = FakeLimit(clock, RATE)
    polled = {**SETTINGS, "poll_interval": 5}
    with inprocess_runtime(tmp_path, no_codes, throttle=limit, clock=clock, **polled) as (
        rt,
        sim,
        _,
    ):
        rt.client._transport = _FirstCancelAnswerLost(sim)
        [slot_id] = plan_job(rt.engine, quantity=1, code_timeout=6)
        run_broker(rt, clock, [Nudge(Action.PLACE, slot_id)], horizon=600)

        [row] = _rows(rt.engine, 1)
        assert row.state is State.CANCELLED, row.error
        [order] = sim.ledger.orders()
        assert order.refunded
        sent = [t for t, e, _ in sim.ledger.requests() if e == "POST /set_status"]
        assert len(sent) == 2, sent  # the lost one, then the one the provider refused
        assert sent[1] - sent[0] < 10, sent  # not the 15 s a refusal waits


class _FirstCancelAnswerLost(httpx.BaseTransport):
    """The simulator acts on every request; the answer to the first cancel never arrives."""

    def __init__(self, sim: Simulator) -> None:
        self._inner = simulator_transport(sim)
        self._lost = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if request.url.path.endswith("/set_status") and not self._lost:
            self._lost = True
            raise httpx.ReadTimeout("the answer never came", request=request)
        return response
