"""The circuit breaker per (service, country), read from the orders in the database: after K
code-less orders in a row the country is passed over for the cool-down; a code resets it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from structlog.testing import capture_logs

from orchestrator.db import store
from orchestrator.db.engine import transaction
from orchestrator.db.models import Activation, State
from orchestrator.jobs.resolve import ResolvedJob, ResolvedTarget
from orchestrator.jobs.submit import job_plan
from orchestrator.lifecycle.breaker import Breaker, read_breakers, tripped
from orchestrator.lifecycle.cache import TtlCache
from orchestrator.lifecycle.planner import NoChoice, choose_country
from orchestrator.provider.types import Price
from orchestrator.sandbox.config import SandboxConfig
from tests.inprocess import inprocess_runtime

UK, US = 16, 1
SERVICE = 1003
COOLDOWN = 1800.0
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# (country, state, cancel_reason, minutes before NOW it finished), oldest first
Outcome = tuple[int, State, str | None, float]


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEGITSMS_API_KEY", "LEGITSMS_BASE_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _job(quantity: int) -> ResolvedJob:
    return ResolvedJob(
        name="breaker",
        budget=None,
        code_timeout=10.0,
        schedule=None,
        targets=[
            ResolvedTarget(
                index=0,
                service_id=SERVICE,
                service_name="Telegram",
                countries=[(UK, "United Kingdom"), (US, "United States")],
                quantity=quantity,
                max_price=Decimal("2.00"),
            )
        ],
    )


def _orders(engine: Engine, outcomes: Sequence[Outcome], now: datetime = NOW) -> None:
    """Slots that ended as told, written straight into the database."""
    with transaction(engine) as session:
        _, ids = store.create_job(session, job_plan(_job(len(outcomes))), source="inline")
    with Session(engine) as session:
        for slot_id, (country, state, reason, ago) in zip(ids, outcomes, strict=True):
            act = session.get(Activation, slot_id)
            assert act is not None
            act.state, act.cancel_reason = state, reason
            act.country_id = country
            act.country_name = "United Kingdom" if country == UK else "United States"
            act.finished_at = now - timedelta(minutes=ago)
            act.ordered_at = act.finished_at - timedelta(minutes=1)
            session.add(act)
        session.commit()


def _open(engine: Engine, failures: int = 5) -> dict[tuple[int, int], Breaker]:
    with Session(engine) as session:
        return read_breakers(session, failures=failures, cooldown=COOLDOWN, now=NOW)


def _timeouts(country: int, n: int, *, latest: float = 1.0) -> list[Outcome]:
    """``n`` orders cancelled at their timeout, the last ``latest`` minutes ago."""
    return [(country, State.CANCELLED, "timeout", latest + n - 1 - i) for i in range(n)]


def test_k_code_less_orders_in_a_row_open_the_breaker_until_the_cool_down_ends(
    engine: Engine,
) -> None:
    # Expired (no cancel_reason) counts as code-less too; received earlier does not break it.
    _orders(engine, [(UK, State.RECEIVED, None, 20.0), (UK, State.EXPIRED, None, 9.0)])
    _orders(engine, _timeouts(UK, 4, latest=2.0))

    found = _open(engine)

    assert list(found) == [(SERVICE, UK)]
    breaker = found[SERVICE, UK]
    assert breaker.until == NOW - timedelta(minutes=2) + timedelta(seconds=COOLDOWN)
    assert breaker.failures == 5
    assert (breaker.service_name, breaker.country_name) == ("Telegram", "United Kingdom")
    assert breaker.reason == "breaker open until 12:28:00 UTC after 5 orders without a code"


def test_a_code_resets_the_run(engine: Engine) -> None:
    _orders(engine, [*_timeouts(UK, 4, latest=5.0), (UK, State.RECEIVED, None, 4.5)])
    _orders(engine, _timeouts(UK, 4, latest=1.0))
    assert _open(engine) == {}, "4 code-less since the last code, not 5"
    assert list(_open(engine, failures=4)) == [(SERVICE, UK)]


def test_our_own_cancels_say_nothing_about_the_country(engine: Engine) -> None:
    ours = [(UK, State.CANCELLED, "target_met", 1.5), (UK, State.CANCELLED, "job_cancelled", 1.2)]
    _orders(engine, [*_timeouts(UK, 4, latest=2.0), *ours])
    assert _open(engine) == {}, "a cancel of ours is neither a failure..."
    _orders(engine, [(UK, State.CANCELLED, None, 1.0)])
    assert list(_open(engine)) == [(SERVICE, UK)], "...nor a reset"


def test_the_breaker_closes_after_the_cool_down_and_stays_per_country(engine: Engine) -> None:
    _orders(engine, _timeouts(UK, 5, latest=31.0))  # the last ended 31 minutes ago
    _orders(engine, _timeouts(US, 5, latest=1.0))
    assert list(_open(engine)) == [(SERVICE, US)]


def test_a_trial_after_the_cool_down_that_brings_no_code_opens_it_again(engine: Engine) -> None:
    _orders(engine, _timeouts(UK, 5, latest=40.0))
    assert _open(engine) == {}, "cooled down: the next order is a trial"
    _orders(engine, [(UK, State.CANCELLED, "timeout", 1.0)])
    found = _open(engine)
    assert found[SERVICE, UK].until == NOW - timedelta(minutes=1) + timedelta(seconds=COOLDOWN)


def test_in_a_row_means_in_the_order_they_were_bought(engine: Engine) -> None:
    # Codes come within seconds, misses end at their timeout: by their ends the 4 misses of
    # 8 orders bought together would be a run; bought, they alternate with the codes.
    _orders(
        engine,
        [
            (UK, State.CANCELLED, "timeout", 1.0) if i % 2 else (UK, State.RECEIVED, None, 9.0)
            for i in range(8)
        ],
    )
    with Session(engine) as session:
        for act in session.exec(select(Activation)).all():
            act.ordered_at = NOW - timedelta(minutes=10, seconds=-(act.id or 0))
            session.add(act)
        session.commit()
    assert _open(engine, failures=4) == {}


def test_the_rule() -> None:
    at = NOW - timedelta(minutes=1)
    assert tripped([(True, at)] * 3, 3, COOLDOWN, NOW) == at + timedelta(seconds=COOLDOWN)
    assert tripped([(True, at)] * 2, 3, COOLDOWN, NOW) is None
    assert tripped([(True, at), (False, at), (True, at)], 3, COOLDOWN, NOW) is None
    assert tripped([(True, at)] * 3, 3, 0.0, NOW) is None, "a cool-down of 0 turns it off"
    assert tripped([(True, at)] * 3, 3, 60.0, NOW) is None, "cooled down"


def test_the_planner_passes_an_open_breaker_over_and_says_why() -> None:
    prices = {
        UK: Price(UK, "United Kingdom", Decimal("0.50"), 9, 95),
        US: Price(US, "United States", Decimal("1.00"), 9, 60),
    }
    countries = [(UK, "United Kingdom"), (US, "United States")]
    breaker = Breaker(SERVICE, UK, NOW + timedelta(minutes=5), 5)

    choice = choose_country(countries, prices, Decimal("2"), {}, breakers={UK: breaker})
    assert not isinstance(choice, NoChoice) and choice.country_id == US

    alone = choose_country(countries[:1], prices, Decimal("2"), {}, breakers={UK: breaker})
    assert alone == NoChoice(
        "breaker_open",
        "United Kingdom: breaker open until 12:05:00 UTC after 5 orders without a code",
    )


def test_the_runtime_reads_the_breakers_and_logs_each_opening_once(tmp_path: Path) -> None:
    provider = SandboxConfig(seed=3)
    with inprocess_runtime(tmp_path, provider, breaker_failures=3) as (rt, _, clock):
        _orders(rt.engine, _timeouts(UK, 3, latest=0.5), now=clock.now)
        rt._breakers = TtlCache(rt._read_breakers, 0.0)  # each call reads the database
        with capture_logs() as logs:
            assert list(rt.breakers(SERVICE)) == [UK]
            assert list(rt.breakers(SERVICE)) == [UK]
            assert rt.breakers(2000) == {}
        opened = [e for e in logs if e["event"] == "breaker_open"]
        assert len(opened) == 1, opened
        assert opened[0]["service"] == "Telegram" and opened[0]["country"] == "United Kingdom"
        assert opened[0]["log_level"] == "warning"

        clock.advance(COOLDOWN)
        assert rt.breakers(SERVICE) == {}, "cooled down"
