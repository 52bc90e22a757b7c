"""The success-rate estimate, the numbers kept in flight, and the ranking of countries."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orchestrator.lifecycle.estimate import (
    FLOOR,
    PRIOR_ORDERS,
    Outcomes,
    numbers_in_flight,
    success_rate,
)
from orchestrator.lifecycle.planner import Choice, NoChoice, choose_country, rank_countries
from orchestrator.provider.types import Price


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
    # Once all are full, the one that brought the most codes takes the next number.
    proven = {1: Outcomes(received=1, codeless=9), 2: Outcomes(received=2)}
    assert rank_countries(countries, prices, cap, proven, {1: 5, 2: 7})[0][0].country_id == 2
    assert rank_countries(countries[:1], prices, cap, {}, {1: 50})[0][0].country_id == 1
