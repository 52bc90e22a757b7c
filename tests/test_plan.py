"""``plan``'s arithmetic (jobs/plan.py): exact negative binomial and binomial quantiles, the
forecast of each kind of target, and the budget check."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from math import comb

import pytest

from orchestrator.jobs.plan import (
    binomial_quantile,
    codes_reserve,
    forecast_job,
    forecast_target,
    negative_binomial_cdf,
    negative_binomial_quantile,
)
from orchestrator.jobs.resolve import ResolvedJob, ResolvedTarget
from orchestrator.lifecycle.estimate import Outcomes
from orchestrator.provider.types import Price


def exact_nb_cdf(successes: int, p: Fraction, trials: int) -> Fraction:
    """P(``successes`` successes within ``trials`` trials), in exact fractions."""
    return sum(
        (
            comb(n - 1, successes - 1) * p**successes * (1 - p) ** (n - successes)
            for n in range(successes, trials + 1)
        ),
        Fraction(0),
    )


def exact_nb_quantile(successes: int, p: Fraction, level: Fraction) -> int:
    n = successes
    while exact_nb_cdf(successes, p, n) < level:
        n += 1
    return n


def exact_binomial_quantile(trials: int, p: Fraction, level: Fraction) -> int:
    total = Fraction(0)
    for k in range(trials + 1):
        total += comb(trials, k) * p**k * (1 - p) ** (trials - k)
        if total >= level:
            return k
    return trials


def test_ten_codes_at_one_in_two_take_19_numbers_at_the_median_and_the_exact_p90() -> None:
    half = Fraction(1, 2)
    # P(10 successes within 19 trials) = P(Bin(19, 1/2) >= 10) = 1/2 exactly: a tie the
    # float sum must not skip.
    assert exact_nb_cdf(10, half, 19) == half
    assert negative_binomial_quantile(10, 0.5, 0.5) == 19 == exact_nb_quantile(10, half, half)
    p90 = exact_nb_quantile(10, half, Fraction(9, 10))
    assert negative_binomial_quantile(10, 0.5, 0.9) == p90 == 26


@pytest.mark.parametrize(
    ("codes", "p"), [(1, Fraction(1, 4)), (7, Fraction(3, 5)), (25, Fraction(9, 10))]
)
def test_negative_binomial_quantiles_and_cdf_match_exact_fractions(codes: int, p: Fraction) -> None:
    for level in (Fraction(1, 2), Fraction(9, 10)):
        assert negative_binomial_quantile(codes, float(p), float(level)) == exact_nb_quantile(
            codes, p, level
        )
    trials = 3 * codes
    assert negative_binomial_cdf(codes, float(p), trials) == pytest.approx(
        float(exact_nb_cdf(codes, p, trials)), rel=1e-12
    )


def test_a_sure_country_needs_exactly_one_number_per_code() -> None:
    assert negative_binomial_quantile(10, 1.0, 0.5) == 10
    assert negative_binomial_quantile(10, 1.0, 0.9) == 10
    assert negative_binomial_cdf(10, 1.0, 10) == 1.0
    assert negative_binomial_cdf(10, 0.5, 9) == 0.0
    assert binomial_quantile(10, 1.0, 0.1) == 10


@pytest.mark.parametrize(("trials", "p"), [(10, Fraction(3, 10)), (40, Fraction(2, 3))])
def test_binomial_quantiles_match_exact_fractions(trials: int, p: Fraction) -> None:
    for level in (Fraction(1, 10), Fraction(1, 2), Fraction(9, 10)):
        assert binomial_quantile(trials, float(p), float(level)) == exact_binomial_quantile(
            trials, p, level
        )


def test_large_targets_do_not_underflow() -> None:
    # p ** codes is far below the smallest float: the pmf is summed in logs.
    median = negative_binomial_quantile(2000, 0.05, 0.5)
    assert abs(median - 40_000) < 300
    assert binomial_quantile(5000, 0.01, 0.5) == 50


PRICES = {
    1: Price(1, "United States", Decimal("1.80"), 2210, 50),
    16: Price(16, "United Kingdom", Decimal("1.55"), 980, 50),
    43: Price(43, "Canada", Decimal("1.90"), 0, 69),
    44: Price(44, "Mexico", Decimal("2.50"), 10, 90),
}
COUNTRIES = [(1, "United States"), (16, "United Kingdom"), (43, "Canada"), (44, "Mexico")]


def target(*, codes: int | None, quantity: int, cap: str = "2.00") -> ResolvedTarget:
    return ResolvedTarget(
        index=0,
        service_id=1003,
        service_name="Telegram",
        countries=COUNTRIES,
        quantity=quantity,
        max_price=Decimal(cap),
        codes=codes,
        prices=PRICES,
    )


def test_a_codes_target_ranks_by_cost_per_code_and_spends_one_price_per_code() -> None:
    forecast = forecast_target(target(codes=10, quantity=30), {})

    assert [c.name for c in forecast.countries] == ["United Kingdom", "United States"]
    uk = forecast.countries[0]
    assert (uk.price, uk.stock, uk.advertised_rate, uk.estimated_rate) == (
        Decimal("1.55"),
        980,
        0.5,
        0.5,
    )
    assert uk.cost_per_code == Decimal("3.1000")
    assert forecast.passed_over == [
        ("Canada", "no stock"),
        ("Mexico", "price 2.50 above the cap 2.00"),
    ]
    assert (forecast.numbers_median, forecast.numbers_p90) == (19, 26)
    assert (forecast.codes_median, forecast.codes_p10) == (10, 10)
    assert forecast.spend_median == forecast.spend_p90 == Decimal("15.50")
    assert forecast.max_numbers_chance == pytest.approx(
        float(exact_nb_cdf(10, Fraction(1, 2), 30)), rel=1e-12
    )
    assert forecast.reserve == 20 * Decimal("2.00")  # 20 numbers in flight at first


def test_outcomes_seen_here_move_the_ranking() -> None:
    # The UK delivered nothing of 20 orders here: (4 x 0.5 + 0) / 24 = 1/12.
    forecast = forecast_target(target(codes=10, quantity=30), {16: Outcomes(0, 20)})
    assert [c.name for c in forecast.countries] == ["United States", "United Kingdom"]
    assert forecast.countries[1].estimated_rate == pytest.approx(1 / 12)
    assert forecast.countries[1].advertised_rate == 0.5


def test_a_quantity_target_buys_its_numbers_and_expects_codes() -> None:
    forecast = forecast_target(target(codes=None, quantity=10), {})

    assert (forecast.numbers_median, forecast.numbers_p90) == (10, 10)
    assert (forecast.codes_median, forecast.codes_p10) == (5, 3)
    assert forecast.max_numbers_chance is None
    assert forecast.spend_median == 5 * Decimal("1.55")
    assert forecast.spend_p90 == 7 * Decimal("1.55")
    assert forecast.reserve == Decimal("20.00")  # each number may be charged its cap


def test_a_target_with_no_buyable_country_has_no_figures() -> None:
    forecast = forecast_target(target(codes=3, quantity=9, cap="1.00"), {})
    assert forecast.countries == []
    assert len(forecast.passed_over) == 4
    assert forecast.numbers_median is None
    assert forecast.reserve == Decimal(0)


def test_codes_reserve_peaks_when_the_most_numbers_are_in_flight() -> None:
    assert codes_reserve(10, 0.5, Decimal("1.55"), Decimal("2.00"), 30) == Decimal("40.00")
    assert codes_reserve(10, 0.5, Decimal("1.55"), Decimal("2.00"), 12) == Decimal("24.00")
    assert codes_reserve(4, 1.0, Decimal("1.00"), Decimal("1.00"), 12) == Decimal("4.00")


def test_the_budget_covers_every_targets_peak_or_not() -> None:
    def job(budget: str | None) -> ResolvedJob:
        return ResolvedJob(
            name="nightly",
            budget=Decimal(budget) if budget is not None else None,
            code_timeout=600.0,
            schedule=None,
            targets=[target(codes=10, quantity=30), target(codes=None, quantity=5)],
        )

    enough = forecast_job(job("50.00"), {})
    assert enough.budget_needed == Decimal("50.00")
    assert enough.budget_suffices is True
    assert enough.spend_median == Decimal("15.50") + 2 * Decimal("1.55")
    assert forecast_job(job("49.99"), {}).budget_suffices is False
    assert forecast_job(job(None), {}).budget_suffices is None
