"""Quiet moments of one API key's wallet, agreed by every process and host through Redis.

The wallet moves only when an order is charged or a cancel refunds one. A balance read while
no such call of the key is in flight, and after every earlier one is recorded, can be set
exactly against the database: a *checkpoint* (lifecycle/checkpoint.py).

Each purchase and cancel *enters* the gate before it claims its slot or marks its cancel
sent, and *leaves* once its outcome is committed. A checkpoint *holds* the gate: from then on
no call may enter (callers put themselves off a few seconds), and once the calls inside have
left, the key is quiet until the hold is released. Entering and holding are each one Lua
script, so a call either entered before the hold (the checkpoint waits for it) or sees it.

A process that dies inside the gate leaves an entry that lapses after its lease (``call_lease``,
longer than any call may take: wiring.py derives it from the timeouts): by then its call has
reached the provider or never will.

A checkpoint holds purchases and cancels off, and a cancel held too long is a refund lost: so a
hold is short (``drain``), is not even tried while a call has been inside for longer than that
(a slow provider, or a process that died inside), and a checkpoint that could not get quiet
makes the next ones wait ``backoff`` seconds (``put_off``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from redis import Redis

from orchestrator.provider.ratelimit import key_fingerprint

__all__ = ["CALL_LEASE", "HELD_RETRY", "HOLD_LEASE", "QuietGate"]

CALL_LEASE: Final = 60.0  # seconds an entry outlives a process that died inside the gate
HOLD_LEASE: Final = 60.0  # seconds a hold outlives a checkpoint that died holding it
HELD_RETRY: Final = 2.0  # seconds a call held off by a checkpoint waits before trying again

# KEYS[1] hold, KEYS[2] calls (a sorted set: token -> lease end, epoch ms of Redis's clock).
# ARGV[1] token, ARGV[2] lease ms. Returns 1 when entered, 0 when a checkpoint holds the gate.
_ENTER: Final = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
return 1
"""

# KEYS[1] hold, KEYS[2] calls; ARGV[1] token, ARGV[2] lease ms.
# Returns -1 when another checkpoint holds the gate, else the calls still inside (lapsed ones
# dropped); the hold is ours either way but the first.
_HOLD: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', tonumber(ARGV[2])) == false then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
return redis.call('ZCARD', KEYS[2])
"""

# KEYS[1] calls; ARGV[1] lease ms. Returns the age in ms of the oldest call inside (-1: none).
_OLDEST: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return -1 end
return now - (tonumber(first[2]) - tonumber(ARGV[1]))
"""

# KEYS[1] hold; ARGV[1] token: released only by its holder.
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""


class QuietGate:
    """The calls of one API key that move its wallet, and the checkpoints that hold them off."""

    def __init__(self, redis: Redis, api_key: str, *, call_lease: float = CALL_LEASE) -> None:
        self._redis = redis
        self._call_ms = int(call_lease * 1000)
        # The braces are a Redis Cluster hash tag, as for the rate limiter's keys.
        prefix = f"legitsms:quiet:{{{key_fingerprint(api_key)}}}"
        self._hold_key = f"{prefix}:hold"
        self._calls_key = f"{prefix}:calls"
        self._backoff_key = f"{prefix}:backoff"
        self._enter = redis.register_script(_ENTER)
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)
        self._oldest = redis.register_script(_OLDEST)

    @property
    def keys(self) -> list[str]:
        """The Redis keys the gate writes (for inspection and clean-up)."""
        return [self._hold_key, self._calls_key, self._backoff_key]

    def enter(self) -> str | None:
        """Enter before a call that may move the wallet; its token, or None while a
        checkpoint holds the gate (put the call off a few seconds)."""
        token = secrets.token_hex(8)
        entered = self._enter(keys=[self._hold_key, self._calls_key], args=[token, self._call_ms])
        return token if int(entered) == 1 else None

    def leave(self, token: str | None) -> None:
        """Leave once the call's outcome is committed (None: it never entered)."""
        if token is not None:
            self._redis.zrem(self._calls_key, token)

    @contextmanager
    def call(self) -> Iterator[bool]:
        """``with gate.call() as entered:`` enters, and leaves at the block's end."""
        token = self.enter()
        try:
            yield token is not None
        finally:
            self.leave(token)

    def oldest_call(self) -> float | None:
        """Seconds the oldest call inside has been there (None: the gate is empty)."""
        age = int(self._oldest(keys=[self._calls_key], args=[self._call_ms]))
        return None if age < 0 else age / 1000

    def put_off(self, seconds: float) -> None:
        """No checkpoint tries to hold the gate for ``seconds`` (one could not get quiet)."""
        self._redis.set(self._backoff_key, "1", px=max(1, int(seconds * 1000)))

    def putting_off(self) -> bool:
        """Whether checkpoints are put off now (put_off)."""
        return bool(self._redis.exists(self._backoff_key))

    @contextmanager
    def hold(self, *, drain: float, lease: float = HOLD_LEASE) -> Iterator[float | None]:
        """Hold the gate and wait up to ``drain`` seconds for the calls inside to leave.

        Yields the monotonic time by which the checkpoint must be done (the hold lapses
        then), or None when the key did not get quiet (or another checkpoint holds it).
        The hold is released at the block's end.
        """
        token = secrets.token_hex(8)
        lease_ms = int(lease * 1000)
        start = time.monotonic()
        deadline = start + drain
        quiet = False
        try:
            while True:
                keys = [self._hold_key, self._calls_key]
                inside = int(self._hold(keys=keys, args=[token, lease_ms]))
                if inside < 0:
                    break  # another checkpoint is at it: one is enough
                if inside == 0:
                    quiet = True
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
            # A safety margin for the clocks of Redis and of this process.
            yield start + lease - 5.0 if quiet else None
        finally:
            self._release(keys=[self._hold_key], args=[token])
