"""Choose a country for one purchase under the cap: in stock, cheapest per expected code.

Each allowed country's cost per code is its live price divided by its estimated success rate
(estimate.py: the advertised rate corrected by this installation's outcomes). A country out of
stock, priced above the cap, or behind an open circuit breaker (breaker.py) is passed over
for the next; a purchase finds no country only when none is left, and then says why for each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from orchestrator.lifecycle.breaker import Breaker
from orchestrator.lifecycle.estimate import Outcomes, probe_cap, success_rate
from orchestrator.money import shown
from orchestrator.provider.types import Price

SHOWN_REASONS = 5  # countries named in a NoChoice's detail; the rest are counted


@dataclass(frozen=True)
class Choice:
    """The country to buy in, at its live price, and its estimated success rate."""

    country_id: int
    country_name: str
    price: Decimal
    rate: float = 1.0

    @property
    def cost_per_code(self) -> Decimal:
        return self.price / Decimal(str(self.rate))


@dataclass(frozen=True)
class NoChoice:
    """Why no country can be bought now: ``no_stock``, ``price_above_cap`` or
    ``breaker_open``, and each country's own reason in ``detail``."""

    reason: str
    detail: str


def rank_countries(
    countries: Sequence[tuple[int, str]],
    prices: Mapping[int, Price],
    cap: Decimal,
    outcomes: Mapping[int, Outcomes],
    waiting: Mapping[int, int] | None = None,
    breakers: Mapping[int, Breaker] | None = None,
) -> tuple[list[Choice], list[tuple[str, str]]]:
    """The buyable countries, cheapest per expected code first (ties keep the job file's
    order, so a single-country target buys where it says), and why each other one is not
    (``breakers``: the countries whose circuit breaker is open, passed over).

    ``waiting``, for a codes target: numbers waiting per country. A country holding its
    ``probe_cap`` goes after those that do not, while any does (estimate.py); once all do,
    the one that brought the most codes goes first: the first ranked may be one whose
    flattering advertised rate the caps are holding back while its misses come in.
    """
    buyable: list[tuple[Decimal, int, Choice]] = []
    passed_over: list[tuple[str, str]] = []
    for order, (country_id, name) in enumerate(countries):
        breaker = (breakers or {}).get(country_id)
        if breaker is not None:
            passed_over.append((name, breaker.reason))
            continue
        price = prices.get(country_id)
        if price is None or price.count <= 0:
            passed_over.append((name, "no stock"))
            continue
        if price.cost > cap:
            passed_over.append((name, f"price {shown(price.cost)} above the cap {shown(cap)}"))
            continue
        rate = success_rate(price.rate, outcomes.get(country_id, Outcomes()))
        choice = Choice(country_id, name, price.cost, rate)
        buyable.append((choice.cost_per_code, order, choice))
    buyable.sort(key=lambda item: (item[0], item[1]))
    ranked = [choice for _, _, choice in buyable]
    if waiting is not None:
        seen = Outcomes()

        def room(choice: Choice) -> tuple[bool, int]:
            got = outcomes.get(choice.country_id, seen)
            full = waiting.get(choice.country_id, 0) >= probe_cap(got)
            return full, -got.received if full else 0

        ranked = sorted(ranked, key=room)  # stable: ties keep the ranking's order
    return ranked, passed_over


def choose_country(
    countries: Sequence[tuple[int, str]],
    prices: Mapping[int, Price],
    cap: Decimal,
    outcomes: Mapping[int, Outcomes] | None = None,
    waiting: Mapping[int, int] | None = None,
    breakers: Mapping[int, Breaker] | None = None,
) -> Choice | NoChoice:
    """The allowed country with the lowest cost per expected code, or why there is none."""
    ranked, passed_over = rank_countries(
        countries, prices, cap, outcomes or {}, waiting=waiting, breakers=breakers
    )
    if ranked:
        return ranked[0]
    whys = [why for _, why in passed_over]
    if all(why == "no stock" for why in whys):
        reason = "no_stock"
    elif any(why.startswith("price ") for why in whys):
        reason = "price_above_cap"
    else:
        reason = "breaker_open"
    return NoChoice(reason, _reasons(passed_over))


def _reasons(passed_over: list[tuple[str, str]]) -> str:
    if len(passed_over) == 1:
        name, why = passed_over[0]
        return f"{name}: {why}"
    shown = "; ".join(f"{name}: {why}" for name, why in passed_over[:SHOWN_REASONS])
    more = len(passed_over) - SHOWN_REASONS
    tail = f"; and {more} more" if more > 0 else ""
    return f"no allowed country is left ({shown}{tail})"
