"""One provider rate limit per API key, shared by every process and host through Redis."""

from __future__ import annotations

import hashlib
import math
import re
import time
from enum import IntEnum
from typing import Final

from redis import Redis

from orchestrator.errors import Throttled
from orchestrator.metrics import RATELIMIT_DEFERRED, RATELIMIT_WAIT

__all__ = ["Priority", "ShareGate", "SharedRateLimiter", "horizon", "key_fingerprint"]

_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# A refused caller is told to come back at least this much later, so that a retry_after of
# zero can never turn a re-enqueued message into a busy loop.
_MIN_RETRY: Final = 0.001

# With no limit of our own only a 429's pause can hold a call; having just seen none, a
# process trusts that for this long rather than asking Redis before every request. Another
# process's 429 is then heeded up to this much later.
_UNLIMITED_RECHECK: Final = 0.05

# Slots are booked this much (a share of the interval) further apart than the rate says: two
# requests sent exactly 1/rate apart by our clock may reach the provider a millisecond closer
# (a wake-up or a connection a little late the first time), and a strict limiter refuses the
# second (seen at 0.5 req/s: requests 1.999 s apart, answered 429).
SLOT_MARGIN: Final = 0.02

# Books one slot, GCRA style. The theoretical arrival time (TAT) is the earliest moment the
# next request may be sent; a grant takes the slot max(now, TAT, paused_until) and pushes TAT
# one interval past it. Everything is integer microseconds of the Redis server's clock, so
# hosts whose clocks disagree still agree on the schedule. Values are written with
# string.format because Lua's tostring keeps only 14 significant digits.
#
# KEYS[1] tat, KEYS[2] paused_until; ARGV[1] interval_us, ARGV[2] horizon_us.
# Returns {1, wait_us} when granted, {0, retry_after_us} when refused (nothing written).
_ACQUIRE: Final = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local horizon = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
local slot = math.max(now, tat, paused)
if slot - now > horizon then
  return {0, slot - horizon - now}
end
if interval > 0 then
  local next_tat = slot + interval
  local ttl_ms = math.ceil((next_tat - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
end
return {1, slot - now}
"""

# Extends the shared pause; a shorter pause than the one in force changes nothing.
# KEYS[1] paused_until; ARGV[1] seconds_us.
_PAUSE: Final = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untl = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > current then
  local ttl_ms = math.ceil((untl - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.0f', untl), 'PX', ttl_ms)
end
return 0
"""


def key_fingerprint(api_key: str) -> str:
    """Name an API key without revealing it: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


class Priority(IntEnum):
    """How much a provider call matters when slots are scarce; lower is more important."""

    CANCEL = 0  # a cancel due before the provider's expiry: missing it forfeits a refund
    POLL = 1  # status checks and other reads
    ORDER = 2  # new purchases: postponing one costs nothing


def horizon(priority: Priority, *, interval: float, max_wait: float) -> float:
    """How far ahead of now a caller of ``priority`` may book a slot (see SharedRateLimiter)."""
    if priority == Priority.CANCEL:
        return max_wait
    if priority == Priority.POLL:
        return min(2 * interval, max_wait / 2)
    return min(interval, max_wait / 4)


class SharedRateLimiter:
    """Books send slots for one API key so that all workers together keep to ``rate``.

    Slots are booked strictly one ``interval`` apart (a GCRA with a burst of one). A caller
    may book a slot ahead of now, and sleeps until it, only within its priority's
    *horizon*; otherwise nothing is booked and :class:`Throttled` says when its horizon
    will reach the next free slot. With ``i = 1 / rate`` and ``m = max_wait``::

        CANCEL  m                   any slot the caller is willing to sleep for
        POLL    min(2 i, m / 2)
        ORDER   min(i, m / 4)       only the next slot, when it is free

    Under saturation the booked backlog runs ahead of now, so only the longest horizon
    still reaches a slot: pending cancels keep it deeper than polls may book, and polls
    keep it deeper than orders may. A refused caller retries when its own horizon reaches
    the next free slot, which is earlier for a higher priority, so it wins that slot too.
    The caps on ``m`` keep the three horizons distinct even when one interval is longer
    than the caller may sleep (the provider's ~2 s interval against a 1 s ``max_wait``).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key_id: str,
        rate: float,
        max_wait: float = 1.0,
    ) -> None:
        if not _KEY_ID.fullmatch(key_id):
            raise ValueError("key_id must be 1-64 of [A-Za-z0-9_.-]; use key_fingerprint()")
        if not math.isfinite(max_wait) or max_wait < 0:
            raise ValueError("max_wait must be a finite number of seconds >= 0")
        self.key_id = key_id
        self.rate = rate if rate > 0 else 0.0
        # rate <= 0 means no limit of our own; a pause from a 429 still applies.
        self.interval = (1.0 + SLOT_MARGIN) / rate if rate > 0 else 0.0
        self.max_wait = max_wait
        self._clear_until = 0.0  # (no limit of our own) until then, skip asking Redis
        # The braces are a Redis Cluster hash tag: both keys land in one slot, as a
        # script touching several keys requires.
        prefix = f"legitsms:ratelimit:{{{key_id}}}"
        self._keys = [f"{prefix}:tat", f"{prefix}:paused_until"]
        self._acquire = redis.register_script(_ACQUIRE)
        self._pause = redis.register_script(_PAUSE)

    def __repr__(self) -> str:
        return f"SharedRateLimiter(key_id={self.key_id!r}, rate={self.rate:g}/s)"

    @property
    def keys(self) -> list[str]:
        """The Redis keys this limiter writes (for inspection and clean-up)."""
        return list(self._keys)

    def horizon(self, priority: Priority) -> float:
        """How far ahead, in seconds, a caller of this priority may book a slot."""
        return horizon(priority, interval=self.interval, max_wait=self.max_wait)

    def acquire(self, priority: Priority) -> None:
        """Book the next send slot and sleep until it; the caller must then send.

        Raises :class:`Throttled` with the earliest moment a retry could succeed when the
        slot lies beyond this priority's horizon; nothing is booked then.
        """
        if self.interval == 0 and time.monotonic() < self._clear_until:
            return  # no limit of our own, and no 429 pause seen a moment ago
        horizon_us = int(self.horizon(Priority(priority)) * 1_000_000)
        interval_us = int(self.interval * 1_000_000)
        reply = self._acquire(keys=self._keys, args=[interval_us, horizon_us])
        granted, micros = int(reply[0]), int(reply[1])
        if not granted:
            RATELIMIT_DEFERRED.labels(Priority(priority).name.lower()).inc()
            raise Throttled(max(micros / 1_000_000, _MIN_RETRY))
        if micros > 0:
            RATELIMIT_WAIT.labels(Priority(priority).name.lower()).inc(micros / 1_000_000)
            time.sleep(micros / 1_000_000)
        elif self.interval == 0:
            self._clear_until = time.monotonic() + _UNLIMITED_RECHECK

    def pause(self, seconds: float) -> None:
        """Hold every caller of this key until ``seconds`` from now (a 429's Retry-After).

        A longer pause extends the one in force; a shorter one never shortens it.
        """
        if not math.isfinite(seconds) or seconds <= 0:
            return
        self._clear_until = 0.0
        self._pause(keys=self._keys[1:], args=[int(seconds * 1_000_000)])


class ShareGate:
    """A share of one API key's limit kept for one kind of call, across processes and hosts.

    Each call admitted books the share's next slot (a GCRA like the limiter's, at the rate
    given with the call, which may change from one call to the next); a call whose slot is
    not yet due is refused with :class:`Throttled`, nothing booked. It comes on top of the
    shared limiter, never instead: what it admits still waits for a slot of the whole limit.
    """

    def __init__(self, redis: Redis, *, key_id: str, name: str) -> None:
        if not _KEY_ID.fullmatch(key_id) or not _KEY_ID.fullmatch(name):
            raise ValueError("key_id and name must be 1-64 of [A-Za-z0-9_.-]")
        prefix = f"legitsms:ratelimit:{{{key_id}}}:share:{name}"
        self._keys = [f"{prefix}:tat", f"{prefix}:paused_until"]  # the second is never set
        self._acquire = redis.register_script(_ACQUIRE)

    def admit(self, rate: float) -> None:
        """Book the share's next slot at ``rate`` calls per second, or raise Throttled."""
        if rate <= 0:
            return
        reply = self._acquire(keys=self._keys, args=[int(1_000_000 / rate), 0])
        granted, micros = int(reply[0]), int(reply[1])
        if not granted:
            raise Throttled(max(micros / 1_000_000, _MIN_RETRY))
