"""Delayed messages run when due, on a real Redis and a real Dramatiq worker, and an idle
worker keeps Dramatiq's back-off (workers/prompt_delays.py)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest

from workers.prompt_delays import PromptDelaysBroker

# Without prompt_delays a message due now waits for two threads backing off up to a second
# (0.5-1 s each once idle): three messages all this close to due is then rare.
ON_TIME = 0.3


@pytest.fixture
def broker(redis_url: str) -> Iterator[PromptDelaysBroker]:
    made = PromptDelaysBroker(url=redis_url, namespace=f"test-{uuid.uuid4().hex[:8]}")
    yield made
    made.close()


def test_delayed_messages_run_when_due(broker: PromptDelaysBroker) -> None:
    ran: dict[str, float] = {}
    done = threading.Event()

    def record(name: str) -> None:
        ran[name] = time.monotonic()
        if len(ran) == 3:
            done.set()

    actor = dramatiq.actor(broker=broker, queue_name="prompt", actor_name="record")(record)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=1000)
    worker.start()
    try:
        time.sleep(3)  # idle: Dramatiq's back-off has grown to its full second
        sent = time.monotonic()
        delays = {"a": 1.2, "b": 2.1, "c": 2.9}
        for name, delay in delays.items():
            actor.send_with_options(args=(name,), delay=int(delay * 1000))
        assert done.wait(10)
    finally:
        worker.stop(timeout=5000)
    late = {name: ran[name] - (sent + delay) for name, delay in delays.items()}
    assert all(-0.05 <= seconds < ON_TIME for seconds in late.values()), late
