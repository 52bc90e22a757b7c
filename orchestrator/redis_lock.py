"""The one Redis lock: a key with a TTL, holding a token that names its holder.

Only the holder can extend or release it (compare-and-act in a Lua script), so a holder
that stalled past its TTL cannot extend or delete the lock another process has taken since.
Used for the one active scheduler and for the one sweep per interval across all hosts.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import Final

import redis

_REFRESH: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLock:
    """A right held by one process at a time, for ``ttl`` seconds unless refreshed."""

    def __init__(self, client: redis.Redis, key: str, *, ttl: float) -> None:
        self.key = key
        # Readable in `redis-cli GET`, so an operator can see which host holds it.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        self._ttl_ms = max(1, round(ttl * 1000))
        self._redis = client
        self._refresh = client.register_script(_REFRESH)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lock if nobody holds it."""
        return bool(self._redis.set(self.key, self.token, nx=True, px=self._ttl_ms))

    def refresh(self) -> bool:
        """Extend the lock for another TTL if it is still ours."""
        return bool(self._refresh(keys=[self.key], args=[self.token, self._ttl_ms]))

    def release(self) -> bool:
        """Give the lock up if it is still ours, so another can take it at once."""
        return bool(self._release(keys=[self.key], args=[self.token]))

    def holder(self) -> str | None:
        """Who holds the lock now, if anyone."""
        value = self._redis.get(self.key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)
