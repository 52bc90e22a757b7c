"""Wallet guards for one API key, shared by every process and host through Redis.

Two things stop buying on a key for a while:

- ``insufficient_funds``: the provider refused an order for lack of money. The first purchase
  to meet it sets a *pause* (``funds_pause`` long); every other purchase sees the pause before
  it claims its slot and waits it out, instead of each spending a call to find out.
- ``min_balance``: the wallet's balance, less what purchases under way may still cost, would
  fall under the floor. The balance is read from ``GET /balance`` at most once every
  ``BALANCE_CHECK_INTERVAL`` seconds per installation and cached in Redis; between reads each
  purchase takes its cap from the cached figure before it is sent (atomically, so two workers
  cannot both take the last money above the floor) and gives back what it did not spend,
  unless the balance was read again meanwhile (the new figure already holds what it cost, or
  will once the provider charges it: the cache errs by at most the orders in flight during a
  read, until the next read).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal

from redis import Redis

from orchestrator.provider.ratelimit import key_fingerprint

__all__ = ["BALANCE_CHECK_INTERVAL", "NO_HOLD", "Hold", "Pause", "WalletGuard"]

BALANCE_CHECK_INTERVAL: Final = 60.0  # seconds between two reads of GET /balance
_REFRESH_LOCK: Final = 10.0  # seconds one process has to read the balance before another may
# Seconds one read of the pause serves this process's purchases: a pause set elsewhere is seen
# this much later at most, when an order sent meanwhile is refused for want of money (bought
# nothing). Two reads per purchase cost 7% of its CPU in bench (a) (yappi), where none comes.
PAUSE_READ_TTL: Final = 0.2

# Takes ARGV[1] micros from the cached balance if what is left stays at or above ARGV[2].
# KEYS[1] balance, KEYS[2] read (which read the balance comes from). Returns {1, read} when
# taken, {0, read} when refused, {-1, 0} when no balance is cached.
_TAKE: Final = """
local balance = redis.call('GET', KEYS[1])
if not balance then return {-1, 0} end
local read = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(balance) - tonumber(ARGV[1]) < tonumber(ARGV[2]) then return {0, read} end
redis.call('DECRBY', KEYS[1], ARGV[1])
return {1, read}
"""

# Gives back ARGV[1] micros to the cached balance if it still comes from read ARGV[2].
_GIVE: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('INCRBY', KEYS[1], ARGV[1])
end
return 0
"""

# Caches a fresh balance, ARGV[1] micros for ARGV[2] ms, as a new read.
_STORE: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
return 0
"""


@dataclass(frozen=True)
class Hold:
    """What a purchase took from the cached balance, and from which read of it."""

    micros: int
    read: int


NO_HOLD: Final = Hold(0, 0)


@dataclass(frozen=True)
class Pause:
    """Buying on the key is paused until ``until`` (epoch seconds), for ``reason``."""

    reason: str  # "insufficient_funds" or "min_balance"
    until: float

    def remaining(self, now: float | None = None) -> float:
        return max(0.0, self.until - (time.time() if now is None else now))


class WalletGuard:
    """The buying pause and the cached balance of one API key."""

    def __init__(
        self,
        redis: Redis,
        api_key: str,
        *,
        pause_seconds: float,
        min_balance_micros: int = 0,
        read_balance: Callable[[], Decimal] | None = None,
        check_interval: float = BALANCE_CHECK_INTERVAL,
    ) -> None:
        self._redis = redis
        self.pause_seconds = pause_seconds
        self.min_balance_micros = min_balance_micros
        self._read_balance = read_balance
        self._check_interval = check_interval
        # The braces are a Redis Cluster hash tag, as for the rate limiter's keys.
        prefix = f"legitsms:wallet:{{{key_fingerprint(api_key)}}}"
        self._pause_key = f"{prefix}:paused"
        self._balance_key = f"{prefix}:balance"
        self._read_key = f"{prefix}:balance_read"
        self._refresh_key = f"{prefix}:balance_refresh"
        self._pause_read: tuple[float, Pause | None] = (-math.inf, None)  # (monotonic, pause)
        self._take = redis.register_script(_TAKE)
        self._give = redis.register_script(_GIVE)
        self._store = redis.register_script(_STORE)

    @property
    def keys(self) -> list[str]:
        """The Redis keys this guard writes (for inspection and clean-up)."""
        return [self._pause_key, self._balance_key, self._read_key, self._refresh_key]

    def paused(self) -> Pause | None:
        """The pause in force, or None (as read at most ``PAUSE_READ_TTL`` seconds ago)."""
        read_at, pause = self._pause_read
        if time.monotonic() - read_at >= PAUSE_READ_TTL:
            pause = self._read_pause()
            self._pause_read = (time.monotonic(), pause)
        return pause if pause is not None and pause.remaining() > 0 else None

    def _read_pause(self) -> Pause | None:
        raw = self._redis.get(self._pause_key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return Pause(str(data["reason"]), float(data["until"]))
        except (ValueError, KeyError, TypeError):
            return None

    def pause(self, reason: str) -> Pause | None:
        """Pause buying for ``pause_seconds``; the new Pause, or None if one was in force."""
        until = time.time() + self.pause_seconds
        value = json.dumps({"reason": reason, "until": until})
        millis = max(1, int(self.pause_seconds * 1000))
        if self._redis.set(self._pause_key, value, px=millis, nx=True):
            pause = Pause(reason, until)
            self._pause_read = (time.monotonic(), pause)
            return pause
        self._pause_read = (-math.inf, None)  # one is in force: the next check reads it
        return None

    def take(self, micros: int) -> Hold | Literal[False] | None:
        """Hold ``micros`` of the balance for a purchase about to be sent.

        A Hold: taken (NO_HOLD when no floor is set); give back what the purchase did not
        spend with give(). False: buying would take the balance under ``min_balance``. None:
        the balance cannot be read right now (another process is reading it); nothing held.
        """
        if self.min_balance_micros <= 0:
            return NO_HOLD
        keys = [self._balance_key, self._read_key]
        for _ in range(2):
            reply = self._take(keys=keys, args=[micros, self.min_balance_micros])
            status, read = int(reply[0]), int(reply[1])
            if status == 1:
                return Hold(micros, read)
            if status == 0:
                return False
            if not self._refresh():
                return None
        return None

    def give(self, hold: Hold, spent: int = 0) -> None:
        """Give back to the cached balance what a held purchase did not spend (all of it when
        nothing was bought), unless the balance was read again since it was taken."""
        if hold.micros and hold.micros != spent:
            keys = [self._balance_key, self._read_key]
            self._give(keys=keys, args=[hold.micros - spent, hold.read])

    def _refresh(self) -> bool:
        """Read the balance into the cache, if no other process is reading it right now."""
        if self._read_balance is None:
            return False
        lock_ms = int(_REFRESH_LOCK * 1000)
        if not self._redis.set(self._refresh_key, "1", px=lock_ms, nx=True):
            return False
        # The lock is left to expire: a failed read is not retried by everyone at once.
        balance = self._read_balance()
        micros = int(balance * 1_000_000)
        ttl_ms = max(1, int(self._check_interval * 1000))
        self._store(keys=[self._balance_key, self._read_key], args=[micros, ttl_ms])
        return True
