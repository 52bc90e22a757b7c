"""An idle worker blocks on Redis instead of polling it, and still runs work the moment it is due
(workers/wake.py), against a real Redis and a real Dramatiq worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest

from workers.wake import WakingRedisBroker

# Dramatiq's own consumers poll an empty queue every 0.5-1 s: a message sent to an idle
# worker waited that long, a delayed one up to twice that (delay queue, then its queue).
PROMPT = 0.3


class CountingBroker(WakingRedisBroker):
    """Counts the consumers' fetches from Redis."""

    fetches = 0

    def do_fetch(self, *args: Any) -> Any:
        type(self).fetches += 1
        return self._dispatch("fetch")(*args)  # type: ignore[no-untyped-call]


class Running:
    """A Dramatiq worker on a broker of its own, with one actor that records when it ran."""

    def __init__(self, redis_url: str) -> None:
        self.broker = CountingBroker(url=redis_url, namespace=f"wake-{uuid.uuid4().hex[:8]}")
        self.ran: list[float] = []
        self.actor: dramatiq.Actor[[], None] = dramatiq.Actor(
            lambda: self.ran.append(time.time()),
            actor_name="record",
            queue_name="wake-test",
            priority=0,
            broker=self.broker,
            options={},
        )
        self.worker = dramatiq.Worker(self.broker, worker_threads=2, worker_timeout=1000)
        self.worker.start()
        self.stopped = False

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.worker.stop(timeout=10_000)

    def ran_at(self, count: int, timeout: float = 10.0) -> float:
        """When the ``count``-th message ran (waiting for it)."""
        deadline = time.monotonic() + timeout
        while len(self.ran) < count:
            assert time.monotonic() < deadline, "the message never ran"
            time.sleep(0.01)
        return self.ran[count - 1]


@pytest.fixture
def running(redis_url: str) -> Iterator[Running]:
    it = Running(redis_url)
    try:
        yield it
    finally:
        it.stop()
        it.broker.close()


def test_an_idle_worker_runs_a_message_the_moment_it_is_sent(running: Running) -> None:
    for i in range(1, 4):
        time.sleep(1.5)  # long enough for every consumer to be waiting
        sent = time.time()
        running.actor.send()
        assert running.ran_at(i) - sent < PROMPT


def test_a_delayed_message_runs_when_it_falls_due_not_a_poll_later(running: Running) -> None:
    for i in range(1, 4):
        due = time.time() + 1.2
        running.actor.send_with_options(delay=1200)
        assert due - 0.01 <= running.ran_at(i) < due + PROMPT


def test_an_idle_worker_barely_touches_redis_and_stops_at_once(running: Running) -> None:
    time.sleep(1.0)  # the consumers' first empty fetches
    before = running.broker.fetches
    time.sleep(3.0)
    # Two consumers (the queue and its delay queue): Dramatiq's polling fetched 6-12 times
    # here; blocking, each fetches once per wait (5 s), so at most once each in this window.
    assert running.broker.fetches - before <= 2
    started = time.monotonic()
    running.stop()  # its consumers were blocked for up to 5 s more
    assert time.monotonic() - started < 2.5
