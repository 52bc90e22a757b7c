"""Run ``sweep_all`` every interval from inside the workers, once per interval across all hosts."""

from __future__ import annotations

import threading
from typing import Any

import dramatiq
import redis
import structlog

log = structlog.get_logger(__name__)

LOCK_KEY = "legitsms-orchestrator:sweep-lock"


class PeriodicSweep(dramatiq.Middleware):
    """Starts a timer thread with the worker; whichever worker takes the Redis lock sweeps."""

    def __init__(self, redis_url: str, interval: float) -> None:
        self._redis = redis.Redis.from_url(redis_url, socket_timeout=10)
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._thread = threading.Thread(target=self._loop, name="periodic-sweep", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()

    def _loop(self) -> None:
        from workers.actors import sweep_all  # late: actors import this module's broker

        # A first sweep soon after boot picks up whatever a crash left behind.
        wait = min(5.0, self._interval)
        while not self._stop.wait(wait):
            wait = self._interval
            try:
                lock_ms = max(1, int(self._interval * 900))
                if self._redis.set(LOCK_KEY, "1", nx=True, px=lock_ms):
                    sweep_all.send()
            except redis.RedisError as exc:
                log.warning("sweep_schedule_failed", error=str(exc))
