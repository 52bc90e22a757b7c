"""A value per key, fetched on a miss and kept ``ttl`` seconds (live prices, outcomes seen)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Thread-safe; a fetch runs outside the lock, so other keys need not wait on it."""

    def __init__(self, fetch: Callable[[K], V], ttl: float) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and time.monotonic() - entry[0] < self._ttl:
                return entry[1]
        value, read_at = self._load(key)
        with self._lock:
            self._entries[key] = (read_at, value)
        return value

    def _load(self, key: K) -> tuple[V, float]:
        """A value for ``key`` and when it counts as read (``time.monotonic()``)."""
        value = self._fetch(key)
        return value, time.monotonic()

    def cached(self, key: K) -> V | None:
        """The last value fetched for ``key``, however old, without a fetch."""
        with self._lock:
            entry = self._entries.get(key)
            return entry[1] if entry is not None else None

    def fresh(self, key: K) -> bool:
        """Whether get() would answer from the cache, without a fetch."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and time.monotonic() - entry[0] < self._ttl
