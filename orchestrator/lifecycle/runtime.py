"""What the lifecycle functions work with: settings, database, provider, clock, and their nudges."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from orchestrator.config import Settings
from orchestrator.db import queries, store
from orchestrator.db.engine import reading, transaction
from orchestrator.db.models import Activation, State, utcnow
from orchestrator.lifecycle.breaker import Breaker, open_breakers
from orchestrator.lifecycle.cache import TtlCache
from orchestrator.lifecycle.estimate import TTL, Outcomes, read_outcomes
from orchestrator.lifecycle.live_prices import PriceCache
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.polling import (
    HISTORY,
    ArrivalCache,
    CachedCount,
    poll_share,
    poll_wait,
)
from orchestrator.provider.client import LegitSMSClient, Throttle
from orchestrator.provider.quiet import QuietGate
from orchestrator.provider.ratelimit import ShareGate, key_fingerprint
from orchestrator.provider.shared_prices import SharedPrices
from orchestrator.provider.wallet import WalletGuard

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlalchemy import Engine

log = structlog.get_logger(__name__)

WAITING_TTL = 1.0  # seconds a count of numbers waiting per country is kept (purchases add theirs)
DUE_TOLERANCE = 0.5  # seconds: host clocks and the broker's delays may differ this much


@dataclass
class Runtime:
    """One process's collaborators, built once and passed to every lifecycle function."""

    settings: Settings
    engine: Engine
    client: LegitSMSClient
    throttle: Throttle | None = None
    wallet: WalletGuard | None = None  # the key's buying pause and balance floor (wallet.py)
    quiet: QuietGate | None = None  # the key's calls that move its wallet (quiet.py)
    poll_gate: ShareGate | None = None  # the polls' share of the limit while buying (polling.py)
    shared_prices: SharedPrices | None = None  # the key's prices, read once for all processes
    clock: Callable[[], datetime] = utcnow
    prices: PriceCache = field(init=False)
    arrivals: ArrivalCache = field(init=False)
    waiting: CachedCount = field(init=False)
    to_buy: CachedCount = field(init=False)
    batch: CachedCount = field(init=False)
    cancelling: CachedCount = field(init=False)
    _outcomes: TtlCache[int, dict[int, Outcomes]] = field(init=False)
    _waiting_by_country: TtlCache[int, dict[int, int]] = field(init=False)

    _breakers: TtlCache[int, dict[int, Breaker]] = field(init=False)
    # Targets seen to ask for numbers, not codes: a target never changes once submitted, so a
    # slot's end does not read it again to learn that nothing is to be steered (targets.py).
    quantity_targets: set[int] = field(init=False)
    _breakers_told: set[tuple[int, int, datetime]] = field(init=False)
    _lock: threading.Lock = field(init=False)

    def __post_init__(self) -> None:
        self.prices = PriceCache(
            self.client.prices, self.settings.price_cache_ttl, self.shared_prices
        )
        self.arrivals = ArrivalCache(self._arrival_delays)
        self.waiting = CachedCount(lambda: self._count(State.WAITING))
        self.to_buy = CachedCount(lambda: self._count(State.PLANNED))
        self.batch = CachedCount(self._count_batch)
        self.cancelling = CachedCount(lambda: self._count(State.CANCELLING))
        self._outcomes = TtlCache(self._read_outcomes, TTL)
        self._waiting_by_country = TtlCache(self._read_waiting, WAITING_TTL)

        self._breakers = TtlCache(self._read_breakers, TTL)
        self._breakers_told = set()
        self.quantity_targets = set()
        self._lock = threading.Lock()

    @property
    def key_fingerprint(self) -> str:
        """The API key's fingerprint: what the wallet's checkpoints are kept under."""
        return key_fingerprint(self.settings.require_api_key())

    def outcomes(self, service_id: int) -> dict[int, Outcomes]:
        """What this installation's orders of the service came to lately, per country."""
        return self._outcomes.get(service_id)

    def waiting_by_country(self, service_id: int) -> dict[int, int]:
        """Numbers of the service being bought or waiting, per country (a second old at most)."""
        return self._waiting_by_country.get(service_id)

    def _read_waiting(self, service_id: int) -> dict[int, int]:
        with reading(self.engine) as session:
            return queries.waiting_by_country(session, service_id)

    def _read_outcomes(self, service_id: int) -> dict[int, Outcomes]:
        with reading(self.engine) as session:
            return read_outcomes(session, service_id, self.now())

    def breakers(self, service_id: int) -> dict[int, Breaker]:
        """The service's countries whose circuit breaker is open now (breaker.py)."""
        now = self.now()
        return {c: b for c, b in self._breakers.get(service_id).items() if b.until > now}

    def _read_breakers(self, service_id: int) -> dict[int, Breaker]:
        with reading(self.engine) as session:
            found = open_breakers(session, self.settings, self.now(), service_id)
        now = self.now()
        with self._lock:
            # Once per process per opening: a re-opening after a trial has a later ``until``;
            # openings that have closed are forgotten.
            self._breakers_told = {told for told in self._breakers_told if told[2] > now}
            fresh = [
                b
                for b in found.values()
                if (b.service_id, b.country_id, b.until) not in self._breakers_told
            ]
            self._breakers_told |= {(b.service_id, b.country_id, b.until) for b in fresh}
        for breaker in fresh:
            log.warning(
                "breaker_open",
                service=breaker.service_name,
                service_id=breaker.service_id,
                country=breaker.country_name,
                country_id=breaker.country_id,
                until=breaker.until.isoformat(),
                failures=breaker.failures,
            )
        return {country: breaker for (_, country), breaker in found.items()}

    def _arrival_delays(self, service_id: int, country_id: int) -> tuple[list[float], float]:
        with reading(self.engine) as session:
            delays = queries.arrival_delays(session, service_id, country_id, limit=HISTORY)
            seen = queries.longest_seen_waiting(session, service_id, country_id, limit=HISTORY)
        return delays, seen

    def _count(self, state: State) -> int:
        with reading(self.engine) as session:
            return queries.count_in_state(session, state)

    def _count_batch(self) -> int:
        with reading(self.engine) as session:
            return queries.count_in_active_jobs(session)

    def poll_wait(self, service_id: int, country_id: int, age: float, *, give_up: float) -> float:
        """Seconds until the next poll of an order ``age`` seconds old, to be given up
        ``give_up`` seconds after its purchase (policy: polling.py)."""
        rate = self.settings.rate_limit
        return poll_wait(
            self.arrivals.model(service_id, country_id),
            age,
            interval=self.settings.poll_interval,
            waiting=self.waiting.get() if rate > 0 else 0,
            rate=rate,
            to_buy=self.to_buy.get() if rate > 0 else 0,
            batch=self.batch.get() if rate > 0 else 0,
            give_up=give_up,
        )

    def admit_poll(self, *, give_up: float) -> None:
        """While numbers remain to be bought, a poll needs a slot of the polls' share too
        (polling.poll_share), so purchases keep the rest: raises Throttled when it has none."""
        rate = self.settings.rate_limit
        if self.poll_gate is None or rate <= 0:
            return
        to_buy = self.to_buy.get()
        if to_buy > 0:
            share = poll_share(to_buy, rate, give_up, batch=self.batch.get())
            self.poll_gate.admit(rate * share)

    def is_due(self, when: datetime | None) -> bool:
        """Whether a nudge for ``when`` may act now; an early one is a stale duplicate."""
        return when is None or when <= self.after(DUE_TOLERANCE)

    def now(self) -> datetime:
        return self.clock()

    def after(self, seconds: float) -> datetime:
        return self.clock() + timedelta(seconds=seconds)

    @property
    def claim_lease(self) -> float:
        """How long an ``ordering`` claim may last before its outcome counts as unknown.

        At least as long as the longest POST /order the client can make, retries included.
        """
        s = self.settings
        return max(s.claim_lease, 4 * s.connect_timeout + s.read_timeout + 10)


def defer(rt: Runtime, act: Activation, action: Action, delay: float) -> list[Nudge]:
    """Put off the slot's next step by ``delay`` seconds, if it is still where it was read."""
    with transaction(rt.engine) as session:
        if not store.reschedule(session, act, rt.after(delay)):
            return []
    assert act.id is not None
    return [Nudge(action, act.id, delay)]
