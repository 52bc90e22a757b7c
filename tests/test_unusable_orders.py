"""Orders the provider answered oddly are recorded, never thrown away (issue 10, items 7, 10).

Against real parts: the simulator over HTTP, the database from the ``engine`` fixture (SQLite
and PostgreSQL), and the ``orchestrator resolve`` command in a subprocess.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from orchestrator.db import queries, store
from orchestrator.db.engine import transaction
from orchestrator.db.models import Activation, Job, State
from orchestrator.errors import ResolveRefused
from orchestrator.lifecycle.cancels import cancel_at
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.purchase import Purchases, place
from orchestrator.lifecycle.resolve_in_doubt import resolve_in_doubt
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.lifecycle.settle import cancel
from orchestrator.money import to_micros
from orchestrator.provider.client import LegitSMSClient
from orchestrator.provider.types import Price
from orchestrator.sandbox.config import DEFAULT_SERVICES, DEMO_API_KEY, SandboxConfig, SandboxOffer
from orchestrator.sandbox.server import SandboxServer
from tests.inprocess import FakeClock, inprocess_runtime, plan_job, settings
from tests.support import Orchestrator, fast_env

TELEGRAM, UK = 1003, 16
CAP = Decimal("2.00")


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEGITSMS_API_KEY", "LEGITSMS_BASE_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def provider_charging(cost: str, **overrides: Any) -> SandboxConfig:
    """The simulator, with UK Telegram sold at ``cost`` (and a wallet that can pay it)."""
    services = tuple(
        replace(s, offers={**s.offers, UK: SandboxOffer(Decimal(cost), 100, 67)})
        if s.id == TELEGRAM
        else s
        for s in DEFAULT_SERVICES
    )
    return SandboxConfig(
        seed=5,
        services=services,
        balance=Decimal("1e1000"),
        never_ratio=1.0,
        cancel_min_age=5,
        expiry=60,
        **overrides,
    )


@contextmanager
def runtime_over_http(
    engine: Engine, config: SandboxConfig, **overrides: Any
) -> Iterator[tuple[Runtime, SandboxServer, FakeClock]]:
    """A Runtime on ``engine`` whose client talks HTTP to a simulator sharing its fake clock."""
    clock = FakeClock()
    with SandboxServer(config, port=0, clock=clock.epoch) as server:
        client = LegitSMSClient(server.url, DEMO_API_KEY, read_timeout=5.0)
        rt = Runtime(
            settings=settings(price_cache_ttl=3600, **overrides),
            engine=engine,
            client=client,
            clock=clock,
        )
        try:
            yield rt, server, clock
        finally:
            client.close()


def believe_price(rt: Runtime, cost: str = "1.00") -> None:
    """Our copy of the prices says UK Telegram costs ``cost``: the charge is what differs."""
    price = Price(country_id=UK, country="United Kingdom", cost=Decimal(cost), count=100, rate=67)
    rt.prices._entries[TELEGRAM] = (time.monotonic(), {UK: price})


def row(engine: Engine, slot_id: int) -> Activation:
    with Session(engine) as session:
        found = session.get(Activation, slot_id)
        assert found is not None
        return found


def reserved(engine: Engine, job_id: int = 1) -> int:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.reserved_micros


# -- item 7: an order with an unusable cost is recorded, held at the cap, and cancelled ------


@pytest.mark.parametrize("cost", ["-1", "1e15", "1e999"], ids=["negative", "1e15", "infinite"])
def test_an_order_charged_an_unusable_cost_is_recorded_held_at_the_cap_and_refunded(
    engine: Engine, cost: str
) -> None:
    # "1e999" is sent by the simulator as Infinity: JSON has no such number.
    config = provider_charging(cost)
    with runtime_over_http(engine, config) as (rt, server, clock):
        [slot_id] = plan_job(engine, quantity=1, budget=Decimal("10"), cap=CAP, code_timeout=30)
        believe_price(rt)  # /prices shows the same cost; the price moved after we looked

        nudges = place(rt, slot_id)

        [order] = server.ledger.orders()
        bought = row(engine, slot_id)
        assert bought.state is State.CANCELLING
        assert bought.cancel_reason == "unusable_cost"
        assert (bought.order_id, bought.phone) == (order.order_id, order.phone)
        assert bought.cost_micros is None  # unknown, never a made-up figure
        assert bought.reserved_micros == to_micros(CAP) == reserved(engine)
        assert bought.ordered_at is not None
        assert bought.next_action_at == bought.ordered_at + timedelta(seconds=5)
        assert nudges == [Nudge(Action.CANCEL, slot_id, 5.0)]

        clock.advance(6.5)
        cancel(rt, slot_id)

        assert row(engine, slot_id).state is State.CANCELLED
        assert server.ledger.orders()[0].refunded
        assert reserved(engine) == 0


def test_an_order_whose_phone_is_unusable_is_recorded_at_its_cost_and_cancelled(
    tmp_path: Path,
) -> None:
    with inprocess_runtime(tmp_path, provider_charging("1.55"), price_cache_ttl=3600) as (
        rt,
        simulator,
        _clock,
    ):
        [slot_id] = plan_job(rt.engine, quantity=1, cap=CAP)
        real = simulator._routes["POST", "/order"]

        def no_phone(account: int, params: dict[str, str], now: float) -> Any:
            reply = real(account, params, now)
            return replace(reply, body=reply.body.replace(b'"phone":"', b'"phone":"\\u001b'))

        simulator._routes["POST", "/order"] = no_phone
        place(rt, slot_id)

        [order] = simulator.ledger.orders()
        bought = row(rt.engine, slot_id)
        assert bought.state is State.CANCELLING
        assert bought.cancel_reason == "unusable_answer"
        assert (bought.order_id, bought.phone) == (order.order_id, None)
        assert bought.cost_micros == bought.reserved_micros == to_micros(Decimal("1.55"))


# -- item 7: an order id answered twice puts the second slot in doubt ------------------------


def test_an_order_id_answered_for_a_second_slot_puts_it_in_doubt(engine: Engine) -> None:
    # Two simulators with one seed number their orders alike: the second answers the first's id.
    config = provider_charging("1.55")
    with (
        runtime_over_http(engine, config) as (rt, _first, _clock),
        SandboxServer(config, port=0) as second,
        LegitSMSClient(second.url, DEMO_API_KEY) as other,
    ):
        first_id, second_id = plan_job(engine, quantity=2, budget=Decimal("10"), cap=CAP)
        rt.prices.get(TELEGRAM)
        place(rt, first_id)
        rt.client = other
        nudges = place(rt, second_id)

        first, doubted = row(engine, first_id), row(engine, second_id)
        assert first.state is State.WAITING
        assert doubted.state is State.IN_DOUBT
        assert doubted.order_id is None
        assert doubted.error == (
            f"the provider answered order_id {first.order_id}, already recorded for slot {first_id}"
        )
        assert doubted.reserved_micros == to_micros(CAP)
        assert nudges == []


def test_a_reused_order_id_whose_holder_is_not_found_still_ends_in_doubt_not_in_an_error(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unique index refuses the write even when the slot holding the id cannot be named
    (the lookup after the refusal finds none): this slot ends in doubt, and only its write is
    undone (the next claim in the same transaction stands)."""

    config = provider_charging("1.55")
    with (
        runtime_over_http(engine, config) as (rt, _first, _clock),
        SandboxServer(config, port=0) as second,
        LegitSMSClient(second.url, DEMO_API_KEY) as other,
    ):
        ids = plan_job(engine, quantity=3, budget=Decimal("10"), cap=CAP)
        rt.prices.get(TELEGRAM)
        place(rt, ids[0])
        monkeypatch.setattr(queries, "slot_holding_order", lambda session, order_id: None)
        rt.client = other
        purchases = Purchases(rt, ids[1:])
        place(rt, ids[1], purchases=purchases)  # answered ids[0]'s order id; written below
        place(rt, ids[2], purchases=purchases)  # its claim's transaction writes ids[1]
        purchases.finish()

        assert row(engine, ids[1]).state is State.IN_DOUBT
        assert "already recorded for another slot" in (row(engine, ids[1]).error or "")
        assert row(engine, ids[2]).state is State.WAITING


# -- item 7: resolve refuses bad requests plainly ---------------------------------------------


def in_doubt_beside_an_order(engine: Engine) -> tuple[int, int, str]:
    """Slot A waiting on order 777, slot B in doubt; returns (A, B, A's order id)."""
    a, b = plan_job(engine, quantity=2, budget=Decimal("10"), cap=CAP)
    with transaction(engine) as session:
        acts = {act.id: act for act in queries.get_activations(session, [a, b])}
        store.move(session, acts[a], State.WAITING, event="test", order_id="777")
        store.move(session, acts[b], State.IN_DOUBT, event="test", error="timeout")
    return a, b, "777"


def test_resolve_refuses_an_order_id_another_slot_holds(tmp_path: Path) -> None:
    with inprocess_runtime(tmp_path, SandboxConfig()) as (rt, _simulator, _clock):
        a, b, used = in_doubt_beside_an_order(rt.engine)

        with pytest.raises(ResolveRefused, match=f"order id {used} is already slot {a}'s"):
            resolve_in_doubt(rt, b, order_id=used)
        with pytest.raises(ResolveRefused, match="no slot 99"):
            resolve_in_doubt(rt, 99, order_id="778")
        with pytest.raises(ResolveRefused, match=f"slot {a} is waiting, not in_doubt"):
            resolve_in_doubt(rt, a, order_id="778")

        assert row(rt.engine, b).state is State.IN_DOUBT


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["2", "--order-id", "777"], "error: order id 777 is already slot 1's"),
        (["99", "--order-id", "778"], "error: no slot 99"),
        (["1", "--order-id", "778"], "error: slot 1 is waiting, not in_doubt"),
        (["2", "--order-id", "7\x1b[2J"], "error: --order-id"),
        (["2", "--order-id", "7" * 100], "error: --order-id"),
    ],
    ids=["used", "unknown", "not-in-doubt", "control-chars", "too-long"],
)
def test_the_resolve_command_answers_a_bad_request_with_exit_2_and_one_line(
    tmp_path: Path, sqlite_url: str, redis_url: str, args: list[str], message: str
) -> None:
    from orchestrator.db.engine import create_tables, make_engine

    engine = make_engine(sqlite_url)
    create_tables(engine)
    in_doubt_beside_an_order(engine)
    engine.dispose()
    cli = Orchestrator(
        workdir=tmp_path, env=fast_env("http://127.0.0.1:9/unused", redis_url, sqlite_url, tmp_path)
    )

    result = cli.run("resolve", *args, timeout=60)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr


# -- item 10: the first poll is never later than the order's cancel time --------------------


@pytest.mark.parametrize(
    ("code_timeout", "cancel_after"),
    [(30.0, 30.0), (3600.0, 50.0)],  # the job's timeout; past it, provider_expiry - margin
    ids=["code-timeout", "provider-expiry"],
)
def test_the_first_check_is_due_no_later_than_the_cancel_time_with_a_long_poll_interval(
    tmp_path: Path, code_timeout: float, cancel_after: float
) -> None:
    ten_minutes = 600.0
    with inprocess_runtime(
        tmp_path,
        SandboxConfig(seed=3, never_ratio=1.0, cancel_min_age=5, expiry=60),
        poll_interval=ten_minutes,
        price_cache_ttl=3600,
    ) as (rt, _simulator, _clock):
        [slot_id] = plan_job(rt.engine, quantity=1, code_timeout=code_timeout)

        [nudge] = place(rt, slot_id)

        bought = row(rt.engine, slot_id)
        with Session(rt.engine) as session:
            job = session.get(Job, bought.job_id)
            assert job is not None
            deadline = cancel_at(rt, bought, job)
        assert bought.ordered_at is not None
        assert deadline == bought.ordered_at + timedelta(seconds=cancel_after)
        assert nudge.action is Action.CHECK
        assert nudge.delay <= cancel_after
        assert bought.next_action_at is not None and bought.next_action_at <= deadline
