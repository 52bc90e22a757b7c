"""Live prices per service, none older than ``price_cache_ttl``, at as few reads as that allows.

A price is live for ``ttl`` seconds from the read that gave it. A ``POST /order`` answers with
what the number cost, which is its country's live price at that moment: an order is as good a
read of its own country's price as ``/prices``. So while every country a purchase chooses from
has been bought in within the TTL, its choice needs no ``/prices`` read. At the provider's real
limit (0.5 requests/s) a read takes an order's turn: bench (d), 40 numbers bought over about
100 s, read ``/prices`` four times where one does.

Stock and advertised success rates come from ``/prices`` only; an order in a country shows it
had stock. A country out of stock is not bought in, so its price ages and the next purchase
that may choose it reads ``/prices`` again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import replace
from decimal import Decimal

from orchestrator.lifecycle.cache import TtlCache
from orchestrator.provider.shared_prices import SharedPrices
from orchestrator.provider.types import Price


class PriceCache(TtlCache[int, dict[int, Price]]):
    """Live prices per service, kept ``ttl`` seconds: a batch costs one /prices call per service.

    With ``shared`` (Redis), one call per service per ``ttl`` across every process of the key
    (shared_prices.py); each process's copy expires with the shared entry. Without it (tests
    in one process) each process reads its own. The costs orders answered with are this
    process's own (:meth:`bought`).
    """

    def __init__(
        self,
        fetch: Callable[[int], dict[int, Price]],
        ttl: float,
        shared: SharedPrices | None = None,
    ) -> None:
        super().__init__(fetch, ttl)
        self._shared = shared if ttl > 0 else None
        self._bought: dict[tuple[int, int], tuple[float, Decimal]] = {}

    def _load(self, key: int) -> tuple[dict[int, Price], float]:
        if self._shared is None:
            return super()._load(key)
        return self._shared.get(key, self._fetch)

    def bought(self, service_id: int, country_id: int, cost: Decimal) -> None:
        """An order in the country was answered with ``cost``: its live price now."""
        with self._lock:
            self._bought[(service_id, country_id)] = (time.monotonic(), cost)

    def fresh_for(self, service_id: int, country_ids: Collection[int]) -> bool:
        """Whether :meth:`for_countries` would answer without a read."""
        return self._from_orders(service_id, country_ids) is not None or self.fresh(service_id)

    def for_countries(self, service_id: int, country_ids: Collection[int]) -> dict[int, Price]:
        """The service's prices for a choice among ``country_ids``, none older than the TTL:
        from the last ``/prices`` read while it is live, each country's cost replaced by a
        later order's; or, with every one of them bought in within the TTL, from the orders
        and no read; or else from a new read."""
        found = self._from_orders(service_id, country_ids)
        return found if found is not None else self._overlaid(service_id, self.get(service_id))

    def mark_out_of_stock(self, service_id: int, country_id: int) -> None:
        """Remember a no_stock answer until the next refresh (in this process only)."""
        with self._lock:
            self._bought.pop((service_id, country_id), None)
            entry = self._entries.get(service_id)
            if entry is not None and country_id in entry[1]:
                prices = dict(entry[1])
                prices[country_id] = replace(prices[country_id], count=0)
                self._entries[service_id] = (entry[0], prices)

    def _from_orders(
        self, service_id: int, country_ids: Collection[int]
    ) -> dict[int, Price] | None:
        """The last read overlaid with the orders' costs, when each of ``country_ids`` was
        bought in within the TTL (and the last read listed it); else None."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(service_id)
            if entry is None or not country_ids:
                return None
            for country_id in country_ids:
                seen = self._bought.get((service_id, country_id))
                if seen is None or now - seen[0] >= self._ttl or country_id not in entry[1]:
                    return None
        return self._overlaid(service_id, entry[1])

    def _overlaid(self, service_id: int, prices: dict[int, Price]) -> dict[int, Price]:
        """``prices`` with each country's cost from an order answered after they were read."""
        with self._lock:
            entry = self._entries.get(service_id)
            read_at = entry[0] if entry is not None else float("-inf")
            later = {
                country: cost
                for (service, country), (at, cost) in self._bought.items()
                if service == service_id and at > read_at and country in prices
            }
        if not later:
            return prices
        return {
            country: replace(price, cost=later[country]) if country in later else price
            for country, price in prices.items()
        }
