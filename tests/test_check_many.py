"""Polling several orders in one step: one read, one write, each slot's outcome on its own."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from orchestrator.db import queries, store
from orchestrator.db.engine import reading, transaction
from orchestrator.db.models import Activation, State
from orchestrator.errors import Throttled
from orchestrator.lifecycle import polling
from orchestrator.lifecycle.cancels import give_up_after
from orchestrator.lifecycle.nudges import Action
from orchestrator.lifecycle.polling import POLL_SHARE
from orchestrator.lifecycle.purchase import place
from orchestrator.lifecycle.settle import check_many
from orchestrator.provider.ratelimit import Priority
from orchestrator.provider.types import CodeStatus
from orchestrator.sandbox.config import SandboxConfig
from tests.inprocess import inprocess_runtime, plan_job

PROVIDER = SandboxConfig(seed=7, code_delay=(3.0, 3.0), never_ratio=0.5, cancel_min_age=5)


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEGITSMS_API_KEY", "LEGITSMS_BASE_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def states(engine: Engine, ids: list[int]) -> dict[int, State]:
    with reading(engine) as session:
        return {act.id or 0: act.state for act in queries.get_activations(session, ids)}


def test_codes_are_stored_and_the_rest_polled_again_each_once(tmp_path: Path) -> None:
    with inprocess_runtime(tmp_path, PROVIDER, price_cache_ttl=3600) as (rt, simulator, clock):
        ids = plan_job(rt.engine, quantity=8, code_timeout=60)
        for slot_id in ids:
            place(rt, slot_id)
        clock.advance(4)  # every code that will ever come has come

        nudges = check_many(rt, ids)

        ended = states(rt.engine, ids)
        with_code = {o.order_id for o in simulator.ledger.orders() if o.code_due_at is not None}
        assert 0 < len(with_code) < len(ids)
        with Session(rt.engine) as session:
            for slot_id in ids:
                row = session.get(Activation, slot_id)
                assert row is not None
                expected = State.RECEIVED if row.order_id in with_code else State.WAITING
                assert ended[slot_id] is expected
        waiting = sorted(i for i, s in ended.items() if s is State.WAITING)
        assert sorted(n.activation_id for n in nudges) == waiting
        assert {n.action for n in nudges} == {Action.CHECK}


def test_a_slot_another_worker_moved_meanwhile_is_left_alone(tmp_path: Path) -> None:
    no_codes = replace(PROVIDER, never_ratio=1.0)
    with inprocess_runtime(tmp_path, no_codes, price_cache_ttl=3600) as (rt, _simulator, clock):
        first, second = plan_job(rt.engine, quantity=2, code_timeout=60)
        place(rt, first)
        place(rt, second)
        clock.advance(4)
        status = rt.client.status

        def status_while_another_worker_ends_first(order_id: str, **kwargs: object) -> CodeStatus:
            with transaction(rt.engine) as session:
                row = queries.get_activation(session, first)
                assert row is not None
                if row.state is State.WAITING:
                    store.move(session, row, State.RECEIVED, event="code_received", code="1234")
            return status(order_id)

        rt.client.status = status_while_another_worker_ends_first  # type: ignore[method-assign]
        nudges = check_many(rt, [first, second])

        assert [n.activation_id for n in nudges] == [second]
        assert states(rt.engine, [first, second]) == {
            first: State.RECEIVED,
            second: State.WAITING,
        }


class Busy:
    """A shared limit with no room for a poll in the next 0.3 s."""

    def __init__(self) -> None:
        self.asked = 0

    def acquire(self, priority: Priority) -> None:
        self.asked += 1
        if priority is not Priority.CANCEL:
            raise Throttled(0.3)

    def pause(self, seconds: float) -> None:
        raise AssertionError("no 429 here")


def test_polls_the_limit_turns_away_come_back_one_after_another(tmp_path: Path) -> None:
    with inprocess_runtime(tmp_path, PROVIDER, price_cache_ttl=3600, rate_limit=4) as (
        rt,
        _simulator,
        clock,
    ):
        ids = plan_job(rt.engine, quantity=5, code_timeout=60)
        for slot_id in ids:
            place(rt, slot_id)
        clock.advance(4)
        busy = Busy()
        rt.client._throttle = busy

        nudges = check_many(rt, ids)

        assert busy.asked == 1, "once one poll is refused, the rest are not tried"
        assert sorted(n.activation_id for n in nudges) == ids
        spacing = 1 / (4 * POLL_SHARE)  # a poll's share of 4 requests/s
        for position, nudge in enumerate(nudges):
            low = 0.3 + position * spacing
            assert low <= nudge.delay < low + spacing, (position, nudge)


def test_a_code_is_learnt_from_the_last_poll_that_looked_not_from_one_turned_away(
    tmp_path: Path,
) -> None:
    # Under a tight limit polls are turned away often; one that never looked says nothing of
    # when the code came (counted as a look, it put (d)'s learnt delays at up to 137 s, not 60).
    with inprocess_runtime(
        tmp_path, PROVIDER, price_cache_ttl=3600, rate_limit=4, poll_interval=1
    ) as (rt, _simulator, clock):
        ids = plan_job(rt.engine, quantity=4, code_timeout=60)
        for slot_id in ids:
            place(rt, slot_id)
        clock.advance(1)  # codes come at 3 s: none yet
        check_many(rt, ids)
        looked_at = rt.now()
        clock.advance(1)
        throttle, rt.client._throttle = rt.client._throttle, Busy()
        check_many(rt, ids)  # turned away: no look
        rt.client._throttle = throttle
        clock.advance(2)
        check_many(rt, ids)  # 4 s: every code that comes is in

        with reading(rt.engine) as session:
            acts = queries.get_activations(session, ids)
            received = [act for act in acts if act.state is State.RECEIVED]
            assert received and all(act.code_after == looked_at for act in received)
            service = acts[0].service_id
            delays = queries.arrival_delays(session, service, acts[0].country_id or 0, limit=10)
        assert delays == pytest.approx([2.5] * len(received))  # the middle of 1-4 s


def test_under_a_limit_a_tail_look_the_model_no_longer_plans_is_not_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (d): an order's one look past the slowest code was planned while the model was young;
    # another order has since been watched to twice that age without a code. The look would
    # find, mostly, an order that never gets one: no call, the cancel at give-up reads a code.
    monkeypatch.setattr(polling, "REFRESH_LEARNING", 0.0)  # the history written below, at once
    with inprocess_runtime(
        tmp_path, PROVIDER, price_cache_ttl=3600, rate_limit=0.5, provider_expiry=1200
    ) as (rt, _simulator, _clock):
        ids = plan_job(rt.engine, quantity=13, code_timeout=600)
        place(rt, ids[0])
        now = rt.now()
        with Session(rt.engine) as session:
            looked = session.get(Activation, ids[0])
            assert looked is not None and looked.state is State.WAITING
            service, country = looked.service_id, looked.country_id or 0
            looked.ordered_at = now - timedelta(seconds=100)
            looked.code_after = now - timedelta(seconds=40)  # its poll at 60 s found nothing
            looked.next_action_at = now  # its look, planned at twice a young model's slowest
            session.add(looked)
            for n, slot_id in enumerate(ids[1:]):
                row = session.get(Activation, slot_id)
                assert row is not None
                row.order_id, row.country_id = f"o{slot_id}", country
                row.ordered_at = row.code_after = now - timedelta(seconds=300)
                if n < 11:  # codes after 10-110 s, counted to the middle: 5-55 s
                    row.state = State.RECEIVED
                    row.code_at = row.ordered_at + timedelta(seconds=10 + 10 * n)
                else:  # watched to 130 s without a code
                    row.state = State.WAITING
                    row.code_after = row.ordered_at + timedelta(seconds=130)
                session.add(row)
            session.commit()
        model = rt.arrivals.model(service, country)
        assert model is not None and not model.censored and model.delays[-1] == 55.0
        asked: list[str] = []
        status = rt.client.status

        def status_noting(order_id: str, **kwargs: Any) -> CodeStatus:
            asked.append(order_id)
            return status(order_id, **kwargs)

        rt.client.status = status_noting  # type: ignore[method-assign]
        nudges = check_many(rt, [ids[0]])

        assert asked == []
        (nudge,) = nudges  # next: its cancel, at the give-up time
        give_up = give_up_after(rt.settings, 600)
        assert nudge.action is Action.CHECK and nudge.delay == pytest.approx(give_up - 100)


def test_one_order_failing_to_poll_loses_none_of_the_others(tmp_path: Path) -> None:
    with inprocess_runtime(tmp_path, PROVIDER, price_cache_ttl=3600) as (rt, simulator, clock):
        ids = plan_job(rt.engine, quantity=6, code_timeout=60)
        for slot_id in ids:
            place(rt, slot_id)
        clock.advance(4)
        broken = slot_order(rt.engine, ids[0])
        status = rt.client.status

        def status_failing_for_one(order_id: str, **kwargs: Any) -> CodeStatus:
            if order_id == broken:
                raise RuntimeError("something unforeseen")
            return status(order_id, **kwargs)

        rt.client.status = status_failing_for_one  # type: ignore[method-assign]
        nudges = check_many(rt, ids)

        ended = states(rt.engine, ids)
        with_code = {o.order_id for o in simulator.ledger.orders() if o.code_due_at is not None}
        for slot_id in ids[1:]:
            came = slot_order(rt.engine, slot_id) in with_code
            assert ended[slot_id] is (State.RECEIVED if came else State.WAITING)
        assert any(ended[slot_id] is State.RECEIVED for slot_id in ids[1:])
        assert ended[ids[0]] is State.WAITING
        assert ids[0] in [n.activation_id for n in nudges]  # polled again later


def slot_order(engine: Engine, slot_id: int) -> str:
    with reading(engine) as session:
        act = queries.get_activation(session, slot_id)
        assert act is not None and act.order_id is not None
        return act.order_id


def test_arrival_delays_count_to_the_middle_of_the_span_the_code_came_in(tmp_path: Path) -> None:
    # Under a tight limit the poll that reads a code may come long after it: learning from it
    # would teach the policy its own poll times (and keep polls late for ever).
    with inprocess_runtime(tmp_path, PROVIDER, price_cache_ttl=3600) as (rt, _simulator, _clock):
        ids = plan_job(rt.engine, quantity=3, code_timeout=60)
        # The third was read by its cancel (refused: the code had come), its row last moved
        # by the cancel at 58 s: when its code came is not known, and it is not learnt.
        looks = ((40.0, None), (None, None), (58.0, "timeout"))
        with Session(rt.engine) as session:
            for slot_id, (seen_empty_at, cancel_reason) in zip(ids, looks, strict=True):
                row = session.get(Activation, slot_id)
                assert row is not None
                start = rt.now()
                row.state, row.order_id, row.country_id = State.RECEIVED, f"o{slot_id}", 16
                row.ordered_at, row.code_at = start, start + timedelta(seconds=60)
                if seen_empty_at is not None:
                    row.code_after = start + timedelta(seconds=seen_empty_at)
                row.cancel_reason = cancel_reason
                session.add(row)
            session.commit()
        with reading(rt.engine) as session:
            service = queries.get_activations(session, ids)[0].service_id
        with reading(rt.engine) as session:
            delays = sorted(queries.arrival_delays(session, service, 16, limit=10))
        assert delays == pytest.approx([50.0, 60.0])  # the middle of 40-60 s; no span: the read


def test_the_longest_seen_waiting_is_the_oldest_age_an_order_was_seen_without_its_code(
    tmp_path: Path,
) -> None:
    # What censors the arrival model: codes slower than this could not have been seen yet.
    with inprocess_runtime(tmp_path, PROVIDER, price_cache_ttl=3600) as (rt, _simulator, _clock):
        ids = plan_job(rt.engine, quantity=5, code_timeout=60)
        rows = [  # state, country, seconds from purchase to the last look, and the last write
            (State.WAITING, 16, 30.0, 30.0),  # polled at 30 s, no code
            (State.WAITING, 16, 20.0, 95.0),  # polls turned away by the limiter until 95 s
            (State.CANCELLED, 16, 40.0, 70.0),  # refunded at 70 s: no code by then
            (State.RECEIVED, 16, 50.0, 90.0),  # had its code: not a look without one
            (State.WAITING, 22, 80.0, 80.0),  # another country
        ]
        service = 0
        with Session(rt.engine) as session:
            for slot_id, (state, country, looked, written) in zip(ids, rows, strict=True):
                row = session.get(Activation, slot_id)
                assert row is not None
                start = rt.now()
                row.state, row.order_id, row.country_id = state, f"o{slot_id}", country
                row.ordered_at, row.updated_at = start, start + timedelta(seconds=written)
                row.code_after = start + timedelta(seconds=looked)
                service = row.service_id
                session.add(row)
            session.commit()
        with reading(rt.engine) as session:
            assert queries.longest_seen_waiting(session, service, 16, limit=10) == 70.0
            # The most recently touched: its last look was at 20 s, whatever was written since.
            assert queries.longest_seen_waiting(session, service, 16, limit=1) == 20.0
            assert queries.longest_seen_waiting(session, service, 99, limit=10) == 0.0
