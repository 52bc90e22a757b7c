"""A message of purchases: each order's outcome is written with the next slot's claim."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from orchestrator.db import queries, store
from orchestrator.db.models import Activation, State
from orchestrator.lifecycle.nudges import Action
from orchestrator.lifecycle.purchase import Purchases, place
from orchestrator.provider.types import Price
from orchestrator.sandbox.config import SandboxConfig
from tests.inprocess import inprocess_runtime, plan_job

PROVIDER = SandboxConfig(seed=3, code_delay=(3.0, 3.0), never_ratio=0.0)


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEGITSMS_API_KEY", "LEGITSMS_BASE_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def states(engine: Engine, ids: list[int]) -> list[State]:
    with Session(engine) as session:
        rows = {row.id: row.state for row in queries.get_activations(session, ids)}
    return [rows[i] for i in ids]


def test_each_outcome_is_written_with_the_next_claim_and_the_last_by_finish(
    tmp_path: Path,
) -> None:
    with inprocess_runtime(tmp_path, PROVIDER, price_cache_ttl=3600) as (rt, simulator, _):
        ids = plan_job(rt.engine, quantity=3)
        purchases = Purchases(rt, ids)

        assert place(rt, ids[0], purchases=purchases) == []
        # Bought, and its outcome owed: the claim is what the database holds for now.
        assert states(rt.engine, ids) == [State.ORDERING, State.PLANNED, State.PLANNED]
        place(rt, ids[1], purchases=purchases)
        assert states(rt.engine, ids) == [State.WAITING, State.ORDERING, State.PLANNED]
        place(rt, ids[2], purchases=purchases)
        assert states(rt.engine, ids) == [State.WAITING, State.WAITING, State.ORDERING]

        nudges = purchases.finish()
        assert states(rt.engine, ids) == [State.WAITING] * 3
        assert [(n.action, n.activation_id) for n in nudges] == [(Action.CHECK, i) for i in ids]
        assert purchases.finish() == []  # nothing is written twice
        orders = simulator.ledger.snapshot(0)["orders"]
        with Session(rt.engine) as session:
            stored = {row.order_id for row in queries.get_activations(session, ids)}
        assert len(orders) == 3 and stored == {o["order_id"] for o in orders}


def test_an_outcome_is_kept_for_later_when_the_next_claim_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with inprocess_runtime(tmp_path, PROVIDER, price_cache_ttl=3600) as (rt, simulator, _):
        ids = plan_job(rt.engine, quantity=2)
        purchases = Purchases(rt, ids)
        place(rt, ids[0], purchases=purchases)

        def broken_claim(*args: object, **kwargs: object) -> store.Claim:
            raise RuntimeError("database hiccup")

        monkeypatch.setattr(store, "claim", broken_claim)
        with pytest.raises(RuntimeError):
            place(rt, ids[1], purchases=purchases)
        # The failed transaction took nothing owed with it: the first order is still to write.
        assert states(rt.engine, ids) == [State.ORDERING, State.PLANNED]
        assert [(n.action, n.activation_id) for n in purchases.finish()] == [(Action.CHECK, ids[0])]
        assert states(rt.engine, ids) == [State.WAITING, State.PLANNED]
        assert len(simulator.ledger.snapshot(0)["orders"]) == 1


def test_an_outcome_is_written_before_the_next_slot_waits_on_a_price_refresh(
    tmp_path: Path,
) -> None:
    with inprocess_runtime(tmp_path, PROVIDER, price_cache_ttl=0) as (rt, _, _clock):
        ids = plan_job(rt.engine, quantity=2)
        seen: list[State] = []
        fetch = rt.prices._fetch

        def watched(service_id: int) -> dict[int, Price]:
            seen.append(states(rt.engine, [ids[0]])[0])
            return fetch(service_id)

        rt.prices._fetch = watched
        purchases = Purchases(rt, ids)
        place(rt, ids[0], purchases=purchases)
        place(rt, ids[1], purchases=purchases)
        purchases.finish()
        # Before slot 0's prices: planned; before slot 1's: slot 0's outcome already written.
        assert seen == [State.PLANNED, State.WAITING]


def test_a_slot_placed_on_its_own_leaves_nothing_owed(tmp_path: Path) -> None:
    with inprocess_runtime(tmp_path, PROVIDER, price_cache_ttl=3600) as (rt, _, _clock):
        [slot_id] = plan_job(rt.engine, quantity=1)
        nudges = place(rt, slot_id)
        assert [n.action for n in nudges] == [Action.CHECK]
        with Session(rt.engine) as session:
            row = session.get(Activation, slot_id)
            assert row is not None and row.state is State.WAITING and row.order_id
