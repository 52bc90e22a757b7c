"""Plan a job file without buying: per target, the countries as the planner ranks them, and
what reaching the target should take in numbers and money; and whether the budget suffices.

The figures follow the first-ranked country (the one the next purchase would take), at its
estimated success rate p (estimate.py) and live price:

- ``codes: N``: the numbers bought until N codes came follow a negative binomial (trials to
  N successes, each with chance p); its median and 90th percentile are computed exactly from
  the pmf (no normal approximation), with the chance that ``max_numbers`` numbers suffice.
  Code-less numbers are refunded, so the spend is N x price, however many numbers it takes.
- ``quantity: N``: N numbers; the codes they bring follow a binomial (N, p): median and 10th
  percentile. The spend is what the codes cost (codes x price: median and 90th percentile).

The budget is checked against what the job reserves at its peak, all targets together: a
``quantity`` target reserves its cap for each of its N numbers (the worst case: every one
charged the cap); a ``codes`` target reserves its cap for each number in flight
(``ceil(codes missing / p)``, within ``max_numbers``) besides what its codes already cost,
and spends N x price in the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.db.engine import transaction
from orchestrator.db.models import utcnow
from orchestrator.jobs.resolve import ResolvedJob, ResolvedTarget, resolve_job
from orchestrator.jobs.spec import JobLimits, parse_job_spec, read_job_file
from orchestrator.lifecycle.estimate import Outcomes, numbers_in_flight, read_outcomes
from orchestrator.lifecycle.planner import rank_countries
from orchestrator.lifecycle.wiring import make_database
from orchestrator.provider.client import LegitSMSClient

MEDIAN = 0.5
PESSIMISTIC = 0.9  # the numbers (and spend) a target needs 9 times in 10 at most
FEW_CODES = 0.1  # the codes a quantity target brings 9 times in 10 at least
_TIE = 1e-12  # a cdf within this of the level reaches it: float sums must not skip a tie
CENT = Decimal("0.0001")


@dataclass(frozen=True)
class CountryPlan:
    """One buyable country of a target, as ranked: price, stock, rates, cost per code."""

    country_id: int
    name: str
    price: Decimal
    stock: int
    advertised_rate: float  # the provider's, 0..1
    estimated_rate: float  # corrected by this installation's outcomes (estimate.py), 0..1
    cost_per_code: Decimal  # price / estimated rate, to 4 decimals


@dataclass(frozen=True)
class TargetForecast:
    """What one target should take, in its first-ranked country (``None``s: none is buyable)."""

    index: int
    service_id: int
    service_name: str
    kind: str  # "codes" or "quantity"
    wanted: int  # codes wanted, or numbers to buy
    max_numbers: int  # the most numbers the target may buy
    max_price: Decimal
    countries: list[CountryPlan]
    passed_over: list[tuple[str, str]]  # (country name, why it is not buyable now)
    numbers_median: int | None
    numbers_p90: int | None
    codes_median: int | None
    codes_p10: int | None
    max_numbers_chance: float | None  # codes: P(numbers needed <= max_numbers)
    spend_median: Decimal
    spend_p90: Decimal
    reserve: Decimal  # the most of the budget the target holds at once

    @property
    def country(self) -> CountryPlan | None:
        return self.countries[0] if self.countries else None


@dataclass(frozen=True)
class JobForecast:
    """The plan of a whole job file."""

    name: str
    budget: Decimal | None
    targets: list[TargetForecast]

    @property
    def spend_median(self) -> Decimal:
        return sum((t.spend_median for t in self.targets), Decimal(0))

    @property
    def spend_p90(self) -> Decimal:
        return sum((t.spend_p90 for t in self.targets), Decimal(0))

    @property
    def budget_needed(self) -> Decimal:
        """What the budget must hold for no purchase to be refused: every target's peak."""
        return sum((t.reserve for t in self.targets), Decimal(0))

    @property
    def budget_suffices(self) -> bool | None:
        """Whether the budget covers ``budget_needed``; ``None`` when the job has none."""
        return None if self.budget is None else self.budget >= self.budget_needed


def plan_job_file(
    settings: Settings, job_file: Path, *, open_client: Callable[[], LegitSMSClient]
) -> JobForecast:
    """Validate the job file as ``submit`` does, resolve it, read this installation's outcomes,
    and forecast each target; nothing is bought, nothing is written but the schema."""
    limits = JobLimits.of(settings)
    source = read_job_file(job_file, limits.max_file_bytes)  # a bad file stops before the network
    spec = parse_job_spec(source, str(job_file), limits)
    engine = make_database(settings)
    with open_client() as client:
        resolved = resolve_job(spec, client, str(job_file))
    now = utcnow()
    outcomes: dict[int, dict[int, Outcomes]] = {}
    with transaction(engine) as session:
        for target in resolved.targets:
            if target.service_id not in outcomes:
                outcomes[target.service_id] = read_outcomes(session, target.service_id, now)
    return forecast_job(resolved, outcomes)


def forecast_job(job: ResolvedJob, outcomes: Mapping[int, Mapping[int, Outcomes]]) -> JobForecast:
    """The forecast of a resolved job; ``outcomes``: this installation's, by service id."""
    return JobForecast(
        name=job.name,
        budget=job.budget,
        targets=[forecast_target(t, outcomes.get(t.service_id, {})) for t in job.targets],
    )


def forecast_target(target: ResolvedTarget, outcomes: Mapping[int, Outcomes]) -> TargetForecast:
    """One target's ranked countries and figures, at the first-ranked country."""
    ranked, passed_over = rank_countries(
        target.countries, target.prices, target.max_price, outcomes
    )
    countries = [
        CountryPlan(
            country_id=choice.country_id,
            name=choice.country_name,
            price=choice.price,
            stock=target.prices[choice.country_id].count,
            advertised_rate=target.prices[choice.country_id].rate / 100.0,
            estimated_rate=choice.rate,
            cost_per_code=choice.cost_per_code.quantize(CENT, rounding=ROUND_HALF_UP),
        )
        for choice in ranked
    ]
    codes = target.codes
    wanted = target.quantity if codes is None else codes
    numbers: tuple[int | None, int | None] = (None, None)
    got: tuple[int | None, int | None] = (None, None)
    chance: float | None = None
    spend = (Decimal(0), Decimal(0))
    reserve = Decimal(0)
    if countries and codes is None:
        first = countries[0]
        p = first.estimated_rate
        numbers = (wanted, wanted)
        got = (binomial_quantile(wanted, p, MEDIAN), binomial_quantile(wanted, p, FEW_CODES))
        spend = (
            binomial_quantile(wanted, p, MEDIAN) * first.price,
            binomial_quantile(wanted, p, PESSIMISTIC) * first.price,
        )
        reserve = wanted * target.max_price
    elif countries and codes is not None:
        first = countries[0]
        p = first.estimated_rate
        numbers = (
            negative_binomial_quantile(codes, p, MEDIAN),
            negative_binomial_quantile(codes, p, PESSIMISTIC),
        )
        got = (codes, codes)
        chance = negative_binomial_cdf(codes, p, target.quantity)
        spend = (codes * first.price, codes * first.price)
        reserve = codes_reserve(codes, p, first.price, target.max_price, target.quantity)
    return TargetForecast(
        index=target.index,
        service_id=target.service_id,
        service_name=target.service_name,
        kind="quantity" if codes is None else "codes",
        wanted=wanted,
        max_numbers=target.quantity,
        max_price=target.max_price,
        countries=countries,
        passed_over=passed_over,
        numbers_median=numbers[0],
        numbers_p90=numbers[1],
        codes_median=got[0],
        codes_p10=got[1],
        max_numbers_chance=chance,
        spend_median=spend[0],
        spend_p90=spend[1],
        reserve=reserve,
    )


def codes_reserve(
    codes: int, rate: float, price: Decimal, cap: Decimal, max_numbers: int
) -> Decimal:
    """The most a codes target holds of the budget at once: with k codes in (k x price spent),
    ``ceil((codes - k) / rate)`` numbers in flight (within what max_numbers leaves), each
    reserving its cap; and at the end, codes x price."""
    peak = codes * price
    for received in range(codes):
        in_flight = min(numbers_in_flight(codes - received, rate), max_numbers - received)
        peak = max(peak, received * price + in_flight * cap)
    return peak


def _negative_binomial_log_pmfs(successes: int, p: float) -> tuple[float, float]:
    """log P(the ``successes``-th success comes at trial ``successes``), and log(1 - p)."""
    return successes * math.log(p), math.log1p(-p)


def negative_binomial_cdf(successes: int, p: float, trials: int) -> float:
    """P(``successes`` successes take at most ``trials`` trials), each a success with chance p."""
    if trials < successes:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_pmf, log_q = _negative_binomial_log_pmfs(successes, p)
    total = 0.0
    for n in range(successes, trials + 1):
        if n > successes:  # pmf(n) = pmf(n - 1) x (n - 1) / (n - successes) x (1 - p)
            log_pmf += math.log(n - 1) - math.log(n - successes) + log_q
        total += math.exp(log_pmf)
    return min(total, 1.0)


def negative_binomial_quantile(successes: int, p: float, level: float) -> int:
    """The fewest trials n with P(``successes`` successes within n trials) >= ``level``."""
    if p >= 1.0:
        return successes
    log_pmf, log_q = _negative_binomial_log_pmfs(successes, p)
    total, n = math.exp(log_pmf), successes
    while total < level - _TIE:
        n += 1
        log_pmf += math.log(n - 1) - math.log(n - successes) + log_q
        total += math.exp(log_pmf)
    return n


def binomial_quantile(trials: int, p: float, level: float) -> int:
    """The fewest successes k with P(at most k successes in ``trials``) >= ``level``."""
    if p >= 1.0:
        return trials
    log_p, log_q = math.log(p), math.log1p(-p)
    total = 0.0
    for k in range(trials + 1):
        log_pmf = (
            math.lgamma(trials + 1)
            - math.lgamma(k + 1)
            - math.lgamma(trials - k + 1)
            + k * log_p
            + (trials - k) * log_q
        )
        total += math.exp(log_pmf)
        if total >= level - _TIE:
            return k
    return trials
