"""Build a process's collaborators from the Settings: Redis, rate limiter, client, runtime."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import redis

from orchestrator.config import Settings
from orchestrator.db.engine import create_tables, make_engine
from orchestrator.errors import Throttled
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.money import to_micros
from orchestrator.provider.client import LegitSMSClient, Throttle
from orchestrator.provider.quiet import QuietGate
from orchestrator.provider.ratelimit import (
    Priority,
    SharedRateLimiter,
    ShareGate,
    key_fingerprint,
)
from orchestrator.provider.shared_prices import SharedPrices
from orchestrator.provider.wallet import WalletGuard

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlalchemy import Engine

WORKER_MAX_WAIT = 1.0  # a worker thread sleeps at most this long for a rate-limit slot...
SLOTS_AHEAD = 4  # ...or this many of the limit's intervals, when they are longer (see below)
MAX_WAIT_CAP = 10.0  # ...but never longer than this: a claimed order may wait too (purchase.py)
# Reads (and cancels) that meet timeouts or 502/503/504 begin new attempts for this long. The
# CLI has nothing else to do, and a cron submit that gives up at the first slow answer fails
# the night's job, so it rides out ``cli_patience`` (a minute by default), also waiting its
# turn under the rate limit that long. A worker gives up sooner: a failed read is not final
# there (a poll or a price read is retried by a delayed message, a cancel by its own retry,
# the sweep re-drives the rest), and a thread held a minute is a thread not serving the
# other slots' messages (8 per process by default).
WORKER_READ_PATIENCE = 15.0
WORKER_ATTEMPTS = 4
BACKOFF_MAX = 7.5  # seconds: the longest back-off between two of the CLI's attempts


class PatientThrottle:
    """The shared limiter for a process that may wait its turn (the CLI), up to ``patience``."""

    def __init__(self, limiter: SharedRateLimiter, patience: float) -> None:
        self._limiter = limiter
        self._patience = patience

    def acquire(self, priority: Priority) -> None:
        deadline = time.monotonic() + self._patience
        while True:
            try:
                self._limiter.acquire(priority)
                return
            except Throttled as exc:
                if time.monotonic() + exc.retry_after > deadline:
                    raise
                time.sleep(exc.retry_after)

    def pause(self, seconds: float) -> None:
        self._limiter.pause(seconds)


def _redis(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5)


def make_throttle(settings: Settings, redis_url: str, *, patient: bool = False) -> Throttle:
    """The shared rate limit of the configured API key; ``patient`` waits its turn (the CLI)."""
    client = _redis(redis_url)
    limiter = SharedRateLimiter(
        client,
        key_id=key_fingerprint(settings.require_api_key()),
        rate=settings.rate_limit,
        max_wait=worker_max_wait(settings.rate_limit),
    )
    return PatientThrottle(limiter, settings.cli_patience) if patient else limiter


def worker_max_wait(rate: float) -> float:
    """How long a worker thread may sleep for a rate-limit slot (the limiter's ``max_wait``).

    An order books a slot only within a quarter of it (ratelimit.horizon), and a slot no order
    booked by its time is lost. At the provider's real limit (an interval of about 2 s) a
    fixed second left orders a quarter-second window, which orders refused and sent back at
    random often missed (bench (d): 2.75 s per number against the 2.1 s interval). Scaled to
    SLOTS_AHEAD intervals the window is one interval, and every horizon keeps its rank.
    """
    if rate <= 0:
        return WORKER_MAX_WAIT
    return max(WORKER_MAX_WAIT, min(SLOTS_AHEAD / rate, MAX_WAIT_CAP))


def make_client(
    settings: Settings, limiter: Throttle | None, *, patient: bool | None = None
) -> LegitSMSClient:
    """An HTTP client for the provider, sharing the rate limit through ``limiter``.

    ``patient`` (the CLI's; by default, whether ``limiter`` is a PatientThrottle): reads ride
    out slow and 5xx answers for ``cli_patience`` rather than WORKER_READ_PATIENCE. A
    ``POST /order`` is never replayed after it may have left, whichever.
    """
    if patient is None:
        patient = isinstance(limiter, PatientThrottle)
    return LegitSMSClient(
        settings.base_url,
        settings.require_api_key(),
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        throttle=limiter,
        # Enough attempts for the patience, the back-off growing to BACKOFF_MAX.
        attempts=8 + math.ceil(settings.cli_patience / BACKOFF_MAX) if patient else WORKER_ATTEMPTS,
        patience=settings.cli_patience if patient else WORKER_READ_PATIENCE,
        retry_after_cap=settings.retry_after_cap,
        max_response_bytes=settings.max_response_bytes,
    )


def call_lease(settings: Settings) -> float:
    """How long a purchase or cancel may stay inside the wallet's quiet gate (quiet.py): its
    HTTP call twice over (a balance read for min_balance may come first) and the write after."""
    return 2 * (settings.connect_timeout + settings.read_timeout) + WORKER_READ_PATIENCE


def make_database(settings: Settings) -> Engine:
    """The engine, with the tables created if missing."""
    engine = make_engine(settings.effective_database_url)
    create_tables(engine)
    return engine


def make_runtime(settings: Settings, redis_url: str, *, patient: bool = False) -> Runtime:
    """Everything a process needs to run the lifecycle."""
    limiter = make_throttle(settings, redis_url, patient=patient)
    client = make_client(settings, limiter)
    return Runtime(
        settings=settings,
        engine=make_database(settings),
        client=client,
        throttle=limiter,
        wallet=make_wallet(settings, redis_url, client),
        quiet=QuietGate(
            _redis(redis_url), settings.require_api_key(), call_lease=call_lease(settings)
        ),
        poll_gate=ShareGate(
            _redis(redis_url), key_id=key_fingerprint(settings.require_api_key()), name="polls"
        )
        if settings.rate_limit > 0
        else None,
        shared_prices=make_shared_prices(settings, redis_url),
    )


def make_shared_prices(settings: Settings, redis_url: str) -> SharedPrices | None:
    """The key's prices shared by its processes (None: ``price_cache_ttl`` 0, nothing kept)."""
    if settings.price_cache_ttl <= 0:
        return None
    return SharedPrices(_redis(redis_url), settings.require_api_key(), ttl=settings.price_cache_ttl)


def make_wallet(settings: Settings, redis_url: str, client: LegitSMSClient) -> WalletGuard:
    """The buying pause and cached balance of the configured API key (wallet.py)."""
    floor = settings.min_balance
    return WalletGuard(
        _redis(redis_url),
        settings.require_api_key(),
        pause_seconds=settings.funds_pause,
        min_balance_micros=to_micros(floor) if floor is not None else 0,
        read_balance=client.balance,
    )
