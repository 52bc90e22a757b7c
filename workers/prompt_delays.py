"""Delayed messages acted on when due, not up to a second later; an idle worker still sleeps.

A Dramatiq worker keeps each delayed message it takes in its delay-queue consumer thread and
puts it on its queue once due; a consumer thread then takes it. Both threads only look between
fetches from Redis, and with nothing to fetch they back off up to ``worker_timeout`` (1 s). So
a message due now waited up to a second twice over: orders refused a rate-limit slot came back
in clumps, and slots went by with no order to take them (bench (b): orders came a median 0.2 s
and 0.9 s at the 90th percentile after they were due, 7% of the slots went unused, and the
batch took 3-4 s longer).

Here no consumer of a queue sleeps past the earliest delayed message this process holds for
it: the delay-queue thread wakes when it is due, the queue's consumer just after. With nothing
held the back-off is Dramatiq's, so an idle worker costs what it did (bench ``--scenario
idle``). A ``worker_timeout`` of 100 ms did as well for (b) and cost five times the idle CPU.

It reads two things of Dramatiq 2.x that are not its API: the consumer thread's
``delay_queue`` (items ordered by their ``priority``, the eta in ms) and the Redis consumer's
``timeout``. Should they change, the back-off stays Dramatiq's (nothing is lost, messages are
late again) and tests/test_prompt_delays.py fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from queue import PriorityQueue
from typing import Any

from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name, q_name

MIN_SLEEP_MS = 5  # Dramatiq's own shortest back-off: what a consumer sleeps at least
AFTER_RELEASE_MS = 5  # the queue's consumer looks this long after a release is due


class PromptDelaysBroker(RedisBroker):
    """A RedisBroker whose consumers wake for the delayed messages this process holds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._held: dict[str, PriorityQueue[Any]] = {}  # queue name -> its delay queue

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        inner = super().consume(queue_name, prefetch=prefetch, timeout=timeout)
        thread = threading.current_thread()  # Dramatiq's consumer thread for this queue
        if queue_name == dq_name(queue_name):
            held = getattr(thread, "delay_queue", None)
            if isinstance(held, PriorityQueue):
                self._held[q_name(queue_name)] = held
            return _WakeWhenDue(inner, timeout, lambda: self._held.get(q_name(queue_name)), 0)
        return _WakeWhenDue(inner, timeout, lambda: self._held.get(queue_name), AFTER_RELEASE_MS)


class _WakeWhenDue(Consumer):
    """A consumer whose idle back-off ends by the earliest message in ``held()``'s queue
    (plus ``after`` ms)."""

    def __init__(
        self,
        inner: Consumer,
        timeout: int,
        held: Callable[[], PriorityQueue[Any] | None],
        after: int,
    ) -> None:
        self._inner = inner
        self._timeout = timeout
        self._held = held
        self._after = after

    def __iter__(self) -> _WakeWhenDue:
        return self

    def __next__(self) -> MessageProxy | None:
        # Dramatiq's Redis consumer backs off up to its ``timeout`` (ms) after an empty fetch.
        self._inner.timeout = self._bound()  # type: ignore[attr-defined]
        return next(self._inner)

    def _bound(self) -> int:
        """The longest this consumer may back off now, in milliseconds."""
        held = self._held()
        if held is None:
            return self._timeout
        with held.mutex:  # the delay-queue thread pushes and pops under it
            eta = getattr(held.queue[0], "priority", None) if held.queue else None
        if not isinstance(eta, int | float):  # none held (or a Dramatiq that keeps them otherwise)
            return self._timeout
        due_in = int(eta) + self._after - current_millis()
        return max(MIN_SLEEP_MS, min(self._timeout, due_in))

    def ack(self, message: MessageProxy) -> None:
        self._inner.ack(message)

    def nack(self, message: MessageProxy) -> None:
        self._inner.nack(message)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        self._inner.requeue(messages)

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
