"""Live prices of one API key, read once per service per TTL by all its processes and hosts.

Each process keeps its prices a while (lifecycle's ``PriceCache``); without this, N processes
read ``GET /prices`` N times per TTL per service, calls taken from orders and polls under the
provider's limit. Here the first process to need a service's prices after the TTL reads them
and stores the parsed answer in Redis until ``ttl`` seconds after the read began; the others
use it, and expire their copy when the Redis entry expires, so no price used is older than
``ttl``.

A short lock (SET NX with a lease) stops a stampede: the others wait for the holder's answer,
polling Redis. A holder whose read fails releases the lock (the next waiter reads); one that
died leaves it to lapse after ``lease`` seconds, when a waiter takes it. A waiter that waited
the whole lease reads for itself.

The entry is data (JSON, money as strings, the provider's country names as plain strings),
never code: what cannot be read back as prices counts as no entry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Final

from redis import Redis

from orchestrator.provider.ratelimit import key_fingerprint
from orchestrator.provider.types import Catalog, Price, Service
from orchestrator.redis_lock import RedisLock

__all__ = ["LOCK_LEASE", "SharedCatalog", "SharedPrices"]

LOCK_LEASE: Final = 10.0  # seconds one process has to read a service's prices before another may
_POLL: Final = 0.05  # seconds between a waiter's looks at Redis


class SharedPrices:
    """The services' prices of one API key, cached in Redis ``ttl`` seconds."""

    def __init__(
        self,
        redis: Redis,
        api_key: str,
        *,
        ttl: float,
        lease: float = LOCK_LEASE,
    ) -> None:
        self._redis = redis
        self._ttl_ms = max(1, int(ttl * 1000))
        self._lease = lease
        # The braces are a Redis Cluster hash tag, as for the rate limiter's keys.
        self._prefix = f"legitsms:prices:{{{key_fingerprint(api_key)}}}"

    def key(self, service_id: int) -> str:
        """The Redis key of the service's prices (the lock is this key + ``:lock``)."""
        return f"{self._prefix}:{service_id}"

    def get(
        self, service_id: int, read: Callable[[int], dict[int, Price]]
    ) -> tuple[dict[int, Price], float]:
        """The service's prices, from Redis or else from ``read`` (``GET /prices``), and when
        they were read (``time.monotonic()``; reckoned from the Redis entry's expiry, so a
        copy kept ``ttl`` from then expires with the entry)."""
        key = self.key(service_id)
        lock = RedisLock(self._redis, f"{key}:lock", ttl=self._lease)
        deadline = time.monotonic() + self._lease
        while True:
            found = self._cached(key)
            if found is not None:
                return found
            if lock.acquire():
                try:
                    # Stored by a holder between our look and our lock: no second read.
                    return self._cached(key) or self._fetch(key, service_id, read)
                finally:
                    lock.release()
            if time.monotonic() >= deadline:  # the holder is slow: read for ourselves
                return self._fetch(key, service_id, read)
            time.sleep(_POLL)

    def _fetch(
        self, key: str, service_id: int, read: Callable[[int], dict[int, Price]]
    ) -> tuple[dict[int, Price], float]:
        # Timed from before the call, the entry (and every copy) expires no later than
        # ``ttl`` after the provider answered.
        read_at = time.monotonic()
        prices = read(service_id)
        left_ms = self._ttl_ms - int((time.monotonic() - read_at) * 1000)
        if left_ms > 0:
            self._redis.set(key, _dump(prices), px=left_ms)
        return prices, read_at

    def _cached(self, key: str) -> tuple[dict[int, Price], float] | None:
        asked_at = time.monotonic()
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(key)
            pipe.pttl(key)
            raw, left_ms = pipe.execute()
        if raw is None or left_ms <= 0:
            return None
        prices = _load(raw)
        if prices is None:
            return None
        return prices, asked_at - (self._ttl_ms - min(left_ms, self._ttl_ms)) / 1000


class SharedCatalog:
    """A catalogue whose prices go through the shared entries: the prices a submit reads
    serve the workers' first purchases, and a submit within the TTL reads none."""

    def __init__(self, catalog: Catalog, shared: SharedPrices) -> None:
        self._catalog = catalog
        self._shared = shared

    def services(self) -> list[Service]:
        return self._catalog.services()

    def prices(self, service_id: int) -> dict[int, Price]:
        return self._shared.get(service_id, self._catalog.prices)[0]


def _dump(prices: dict[int, Price]) -> str:
    # A list keeps the provider's order of countries.
    return json.dumps(
        [[p.country_id, p.country, str(p.cost), p.count, p.rate] for p in prices.values()]
    )


def _load(raw: bytes | str) -> dict[int, Price] | None:
    try:
        rows = json.loads(raw)
        prices = [
            Price(int(c), str(name), Decimal(str(cost)), int(count), int(rate))
            for c, name, cost, count, rate in rows
        ]
    except (ValueError, TypeError, InvalidOperation):
        return None
    if any(not p.cost.is_finite() or p.cost < 0 for p in prices):
        return None
    return {p.country_id: p for p in prices}
