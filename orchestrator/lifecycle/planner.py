"""Choose a country for one purchase under the cap: in stock, cheapest per expected code."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from orchestrator.provider.types import Price


@dataclass(frozen=True)
class Choice:
    """The country to buy in, at its live price."""

    country_id: int
    country_name: str
    price: Decimal


@dataclass(frozen=True)
class NoChoice:
    """Why no country can be bought now: ``no_stock`` or ``price_above_cap``."""

    reason: str
    detail: str


def choose_country(
    countries: Sequence[tuple[int, str]], prices: Mapping[int, Price], cap: Decimal
) -> Choice | NoChoice:
    """The allowed country with the lowest cost per expected code (cost / success rate).

    Ties keep the job file's order, so a single-country target always buys where it says.
    """
    in_stock = [(cid, name, prices[cid]) for cid, name in countries if _available(prices, cid)]
    if not in_stock:
        return NoChoice("no_stock", "no allowed country has stock")
    affordable = [(cid, name, p) for cid, name, p in in_stock if p.cost <= cap]
    if not affordable:
        cheapest = min(p.cost for _, _, p in in_stock)
        return NoChoice("price_above_cap", f"live price {cheapest} is above the cap {cap}")
    best = min(
        enumerate(affordable),
        key=lambda item: (item[1][2].cost / max(item[1][2].rate, 1), item[0]),
    )[1]
    return Choice(country_id=best[0], country_name=best[1], price=best[2].cost)


def _available(prices: Mapping[int, Price], country_id: int) -> bool:
    price = prices.get(country_id)
    return price is not None and price.count > 0
