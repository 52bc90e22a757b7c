"""The success-rate estimate, the numbers kept in flight, and the ranking of countries."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session

from orchestrator.db import store
from orchestrator.db.engine import transaction
from orchestrator.db.models import Activation, State
from orchestrator.jobs.resolve import ResolvedJob, ResolvedTarget
from orchestrator.jobs.submit import job_plan
from orchestrator.lifecycle.estimate import (
    FLOOR,
    PRIOR_ORDERS,
    Outcomes,
    numbers_in_flight,
    share_later,
    success_rate,
)
from orchestrator.lifecycle.planner import Choice, NoChoice, choose_country, rank_countries
from orchestrator.provider.types import Price
from orchestrator.sandbox.config import SandboxConfig
from tests.inprocess import inprocess_runtime


def test_a_country_never_seen_is_taken_at_its_advertised_rate() -> None:
    assert success_rate(70, Outcomes()) == pytest.approx(0.70)


def test_four_orders_of_our_own_weigh_as_much_as_the_advertised_rate() -> None:
    assert PRIOR_ORDERS == 4
    # Advertised 90%, and 4 orders of ours brought 1 code: halfway, (3.6 + 1) / 8.
    assert success_rate(90, Outcomes(received=1, codeless=3)) == pytest.approx(0.575)


def test_many_orders_bring_the_estimate_close_to_what_was_seen() -> None:
    assert success_rate(90, Outcomes(received=20, codeless=180)) == pytest.approx(23.6 / 204)


def test_the_estimate_stays_within_the_floor_and_one() -> None:
    assert success_rate(0, Outcomes(codeless=1000)) == FLOOR
    assert success_rate(100, Outcomes(received=1000)) == 1.0


def test_the_share_of_codes_later_than_an_age_keeps_room_for_one_more() -> None:
    delays = (2.0, 4.0, 6.0, 8.0)
    assert share_later((), 30.0) == 1.0  # no code seen: a waiting number says nothing
    assert share_later(delays, 1.0) == 1.0
    assert share_later(delays, 5.0) == pytest.approx(3 / 5)
    assert share_later(delays, 100.0) == pytest.approx(1 / 5)


def test_a_number_just_bought_leaves_the_estimate_where_it_is() -> None:
    seen = Outcomes(received=1, codeless=1)
    assert success_rate(85, Outcomes(1, 1, waiting=(1.0,) * 10)) == pytest.approx(
        success_rate(85, seen)
    )


def test_numbers_waiting_past_the_codes_seen_count_as_likely_misses() -> None:
    # Advertised 85%; eight numbers waiting longer than each of 20 codes seen.
    late = Outcomes(waiting=(1 / 21,) * 8)
    estimate = success_rate(85, late)
    assert estimate < 0.85 - 0.3, "eight likely misses move it well down"
    # ...but less far than eight orders known to have ended without a code.
    assert estimate > success_rate(85, Outcomes(codeless=8))
    # Halfway through the arrivals, a waiting number is weaker evidence than a late one.
    halfway = success_rate(85, Outcomes(waiting=(0.5,) * 8))
    assert estimate < halfway < 0.85


def test_the_runtime_weighs_numbers_waiting_by_the_services_code_delays(tmp_path: Path) -> None:
    """Six codes came in the UK after 3-8 s; in the US one number has waited 20 s (later
    than every code seen) and one was just bought."""
    service, uk, us = 1003, 16, 1
    job = ResolvedJob(
        name="waiting",
        budget=None,
        code_timeout=60.0,
        schedule=None,
        targets=[
            ResolvedTarget(
                index=0,
                service_id=service,
                service_name="Telegram",
                countries=[(uk, "United Kingdom"), (us, "United States")],
                quantity=8,
                max_price=Decimal("2.00"),
            )
        ],
    )
    with inprocess_runtime(tmp_path, SandboxConfig(seed=3)) as (rt, _, clock):
        with transaction(rt.engine) as session:
            _, ids = store.create_job(session, job_plan(job), source="inline")
        slots: list[tuple[int, State, float | None, float]] = [
            (uk, State.RECEIVED, 3.0 + i, 60.0) for i in range(6)
        ]
        slots += [(us, State.WAITING, None, 20.0), (us, State.WAITING, None, 0.0)]
        with Session(rt.engine) as session:
            for slot_id, (country, state, delay, age) in zip(ids, slots, strict=True):
                act = session.get(Activation, slot_id)
                assert act is not None
                act.state, act.country_id = state, country
                act.ordered_at = clock.now - timedelta(seconds=age)
                if delay is not None:
                    act.code_at = act.ordered_at + timedelta(seconds=delay)
                session.add(act)
            session.commit()
        outcomes = rt.outcomes(service)
    assert outcomes[uk] == Outcomes(received=6)
    assert outcomes[us].received == outcomes[us].codeless == 0
    assert sorted(outcomes[us].waiting) == pytest.approx([1 / 7, 1.0])
    assert success_rate(90, outcomes[us]) < 0.9


@pytest.mark.parametrize(
    ("missing", "rate", "numbers"),
    [(10, 0.5, 20), (10, 1.0, 10), (3, 0.67, 5), (1, 0.9, 2), (0, 0.5, 0), (5, 0.0, 500)],
)
def test_numbers_in_flight_expect_the_codes_missing(
    missing: int, rate: float, numbers: int
) -> None:
    assert numbers_in_flight(missing, rate) == numbers


def price(country: int, cost: str, rate: int, count: int = 100) -> Price:
    return Price(country, f"c{country}", Decimal(cost), count, rate)


def test_countries_rank_by_price_per_expected_code_then_the_files_order() -> None:
    countries = [(1, "A"), (2, "B"), (3, "C")]
    prices = {1: price(1, "1.00", 50), 2: price(2, "0.60", 30), 3: price(3, "0.50", 25)}
    ranked, passed_over = rank_countries(countries, prices, Decimal("2"), {})
    # A: 1.00/0.5 = 2.00 per code; B: 0.60/0.3 = 2.00 (tie: A is listed first); C: 2.00 too.
    assert [c.country_id for c in ranked] == [1, 2, 3]
    assert passed_over == []


def test_what_this_installation_saw_reorders_the_countries() -> None:
    countries = [(1, "Liar"), (2, "Honest")]
    prices = {1: price(1, "1.00", 90), 2: price(2, "1.00", 60)}
    fresh = choose_country(countries, prices, Decimal("1"))
    burnt = choose_country(countries, prices, Decimal("1"), {1: Outcomes(codeless=8)})
    assert isinstance(fresh, Choice) and fresh.country_id == 1
    assert isinstance(burnt, Choice) and burnt.country_id == 2


def test_no_country_left_says_why_for_each() -> None:
    countries = [(1, "Empty"), (2, "Dear"), (3, "Unlisted")]
    prices = {1: price(1, "0.10", 90, count=0), 2: price(2, "3", 90)}
    choice = choose_country(countries, prices, Decimal("1.5"))
    assert choice == NoChoice(
        "price_above_cap",
        "no allowed country is left (Empty: no stock; Dear: price 3.00 above the cap 1.50; "
        "Unlisted: no stock)",
    )


def test_a_codes_target_spreads_its_first_numbers_over_countries_it_has_not_tried() -> None:
    countries = [(1, "Cheap"), (2, "Dear")]
    prices = {1: price(1, "0.10", 85), 2: price(2, "0.30", 60)}
    cap = Decimal("1")
    assert rank_countries(countries, prices, cap, {}, {1: 2})[0][0].country_id == 1
    # Three waiting in a country never tried: the next goes where nothing waits yet.
    assert rank_countries(countries, prices, cap, {}, {1: 3})[0][0].country_id == 2
    # Each code a country brought makes room for two more waiting there...
    seen = {1: Outcomes(received=2, codeless=1)}
    assert rank_countries(countries, prices, cap, seen, {1: 6, 2: 3})[0][0].country_id == 1
    assert rank_countries(countries, prices, cap, seen, {1: 7, 2: 0})[0][0].country_id == 2
    # ...and its misses make none: a flattering price list cannot draw a dozen at once.
    burnt = {1: Outcomes(received=1, codeless=9)}
    assert rank_countries(countries, prices, cap, burnt, {1: 4})[0][0].country_id == 1
    assert rank_countries(countries, prices, cap, burnt, {1: 5})[0][0].country_id == 2
    # Where every country holds its cap, the best is still bought: nothing waits on learning.
    assert rank_countries(countries, prices, cap, {}, {1: 3, 2: 3})[0][0].country_id == 1
    assert rank_countries(countries[:1], prices, cap, {}, {1: 50})[0][0].country_id == 1
