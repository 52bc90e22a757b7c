"""A Redis broker whose idle consumers wait on a wake-up list instead of polling.

Dramatiq's Redis consumer polls: on an empty queue it sleeps up to ``worker_timeout`` and
fetches again, so each consumer of a worker (one per queue, one per delay queue) wakes the
process about once a second with nothing to do, and a message sent meanwhile waits out the
sleep. Here every enqueue also pushes a token on its queue's wake-up list, and a consumer
whose last fetch came back empty blocks on that list (BLPOP) instead of sleeping: it wakes
the moment a message is sent to its queue; a delay queue's consumer also wakes when the
earliest message it holds falls due; and every consumer fetches at least every
``IDLE_WAIT``, which keeps its process's heartbeat fresh (a process silent for the broker's
``heartbeat_timeout`` is taken for dead and its unacked messages are handed to others).

Messages put back on a queue without an enqueue (a stopping worker's requeue, a dead
worker's messages recovered by Dramatiq's maintenance) are fetched within ``IDLE_WAIT``.
"""

from __future__ import annotations

import threading
from queue import PriorityQueue
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import current_millis
from dramatiq.errors import ConnectionClosed

IDLE_WAIT = 5.0  # seconds; a third of the heartbeat_timeout workers/broker.py sets
# Tokens kept per list: enough to wake every consumer of a queue at once. Tokens nobody took
# (every consumer was busy) only cost an empty fetch each later, so the list is capped.
WAKE_CAP = 64
_SHORTEST_WAIT = 0.005  # below this a blocking read is not worth its round trip

# One round trip: push the token, trim the list.
_PUSH = """
redis.call('rpush', KEYS[1], '1')
redis.call('ltrim', KEYS[1], -tonumber(ARGV[1]), -1)
"""


class WakingRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, with consumers that block while idle (see the module)."""

    def __init__(self, *, url: str, **options: Any) -> None:
        super().__init__(url=url, **options)  # type: ignore[no-untyped-call]
        self._push = self.client.register_script(_PUSH)
        # Blocking reads on connections of their own, whose socket timeout outlasts the wait
        # (redis-py's default of 5 s would cut it short); a URL's own timeout still applies.
        self.waiting = redis.Redis.from_url(url, socket_timeout=IDLE_WAIT + 5)
        socket_timeout = self.waiting.connection_pool.connection_kwargs.get("socket_timeout")
        self.longest_wait = IDLE_WAIT if not socket_timeout else min(IDLE_WAIT, socket_timeout / 2)
        # This process's own list: a stopping worker wakes its blocked consumers through it.
        self.local_key = f"{self.namespace}:__wake__.{self.broker_id}"
        self.stopping = False
        self.add_middleware(_StopWaiting())

    def wake_key(self, queue_name: str) -> str:
        """The wake-up list of ``queue_name`` (a delay queue has its own)."""
        return f"{self.namespace}:{queue_name}.wake"

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        sent = super().enqueue(message, delay=delay)
        self._push(keys=[self.wake_key(sent.queue_name)], args=[WAKE_CAP])
        return sent

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        # Called from the consumer thread itself; a delay queue's thread holds the fetched
        # messages until they are due, and the consumer must wake for the earliest of them.
        held = getattr(threading.current_thread(), "delay_queue", None)
        return _WakingConsumer(self, queue_name, prefetch, timeout, held)

    def close(self) -> None:
        super().close()
        self.waiting.close()  # the blocking reads' connections

    def stop_waiting(self) -> None:
        """Wake this process's blocked consumers and keep them from blocking again: a worker
        stops as fast as Dramatiq's own polling lets it."""
        self.stopping = True
        with self.client.pipeline() as pipe:
            pipe.rpush(self.local_key, *["1"] * WAKE_CAP)
            pipe.expire(self.local_key, 60)  # tokens no consumer took
            pipe.execute()


class _StopWaiting(dramatiq.Middleware):
    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if isinstance(broker, WakingRedisBroker):
            broker.stopping = False

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if isinstance(broker, WakingRedisBroker):
            broker.stop_waiting()


class _WakingConsumer(_RedisConsumer):
    def __init__(
        self,
        broker: WakingRedisBroker,
        queue_name: str,
        prefetch: int,
        timeout: int,
        held: PriorityQueue[Any] | None,
    ) -> None:
        super().__init__(broker, queue_name, prefetch, timeout)  # type: ignore[no-untyped-call]
        self._broker = broker
        self._keys = [broker.wake_key(queue_name), broker.local_key]
        # A delay queue whose held messages cannot be seen must poll as Dramatiq does: a
        # blocked consumer would release them late.
        self._blocks = held is not None or not queue_name.endswith(".DQ")
        self._held = held if queue_name.endswith(".DQ") else None
        self._empty = False  # the last fetch came back empty

    def __next__(self) -> Any:
        if self._empty and self._blocks and not self._broker.stopping:
            wait = self._wait()
            if wait >= _SHORTEST_WAIT:
                self._block(wait)
                self.misses = 0  # an empty fetch after waking sleeps Dramatiq's shortest backoff
        fetches = not self.message_cache and self.outstanding_message_count < self.prefetch
        message = super().__next__()  # type: ignore[no-untyped-call]
        self._empty = fetches and message is None
        return message

    def _wait(self) -> float:
        """Seconds to block: IDLE_WAIT at most, or less if a held message falls due sooner."""
        wait = self._broker.longest_wait
        if self._held is not None:
            with self._held.mutex:  # the consumer thread adds to it, worker threads never do
                if self._held.queue:
                    due_ms = self._held.queue[0].priority  # a held message's eta
                    wait = min(wait, (due_ms - current_millis()) / 1000)
        return wait

    def _block(self, seconds: float) -> None:
        try:
            self._broker.waiting.blpop(self._keys, timeout=round(seconds, 3))
        except redis.TimeoutError:  # a socket timeout shorter than the wait: as good as a wake
            return
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
