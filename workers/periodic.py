"""Run the sweep every interval from inside the workers, once per interval across all hosts."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import redis
import structlog

from orchestrator.redis_lock import RedisLock

log = structlog.get_logger(__name__)

LOCK_KEY = "legitsms-orchestrator:sweep-lock"


class PeriodicSweep(dramatiq.Middleware):
    """Starts a timer thread with the worker; whichever worker takes the Redis lock sweeps.

    The sweep runs in the timer thread itself rather than as a queued message: it is the
    safety net for lost messages, so it must not depend on the queue delivering one.
    """

    def __init__(self, redis_url: str, interval: float) -> None:
        client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        # Never released: it expires just before the next interval, one sweep per interval.
        self._lock = RedisLock(client, LOCK_KEY, ttl=interval * 0.9)
        self._interval = interval
        self._stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        threading.Thread(target=self._loop, name="periodic-sweep", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()

    def _loop(self) -> None:
        from workers.actors import sweep_all  # late: actors import this module's broker

        # A first sweep soon after boot picks up whatever a crash left behind; the Redis lock
        # keeps it to one per interval however often workers restart.
        wait = min(1.0, self._interval)
        while not self._stop.wait(wait):
            wait = self._interval
            try:
                if self._lock.acquire():
                    sweep_all.fn()
            except Exception as exc:  # the loop must outlive any one failure
                log.warning("sweep_failed", error=str(exc))
