"""The shared rate limiter, against the real Redis at 127.0.0.1:6379."""

from __future__ import annotations

import itertools
import math
import multiprocessing
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from multiprocessing.synchronize import Barrier as BarrierType
from multiprocessing.synchronize import Event as EventType
from typing import Any

import pytest
from redis import Redis
from redis.exceptions import RedisError

from orchestrator.errors import Throttled
from orchestrator.provider.ratelimit import Priority, SharedRateLimiter, key_fingerprint

# Rates measured on the clock: run alone (make test), not beside other tests' processes.
pytestmark = pytest.mark.serial

HOST, PORT = "127.0.0.1", 6379

LimiterFactory = Callable[..., SharedRateLimiter]


def _connect() -> Redis:
    return Redis(host=HOST, port=PORT, socket_connect_timeout=0.5, socket_timeout=5)


@pytest.fixture(scope="module")
def client() -> Iterator[Redis]:
    client = _connect()
    try:
        client.ping()
    except RedisError as exc:
        pytest.skip(f"these tests need a Redis server at {HOST}:{PORT}: {exc}")
    yield client
    client.close()


@pytest.fixture
def make_limiter(client: Redis) -> Iterator[LimiterFactory]:
    """Build limiters under a key id no other test uses, and delete their keys afterwards."""
    key_id = key_fingerprint(f"test-{uuid.uuid4()}")
    made: list[SharedRateLimiter] = []

    def make(**kwargs: Any) -> SharedRateLimiter:
        kwargs.setdefault("key_id", key_id)
        limiter = SharedRateLimiter(client, **kwargs)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        client.delete(*limiter.keys)


def _acquire_until_granted(limiter: SharedRateLimiter, priority: Priority) -> int:
    """Acquire the way a worker re-enqueues: sleep retry_after; return how often it was told to."""
    refusals = 0
    while True:
        try:
            limiter.acquire(priority)
        except Throttled as exc:
            refusals += 1
            time.sleep(exc.retry_after)
        else:
            return refusals


def _send_for(key_id: str, rate: float, seconds: float, barrier: BarrierType, results: Any) -> None:
    """Run in a spawned process: two threads send as fast as the shared limiter allows."""
    limiter = SharedRateLimiter(_connect(), key_id=key_id, rate=rate)
    stamps: list[float] = []
    lock = threading.Lock()
    barrier.wait()
    deadline = time.time() + seconds

    def loop() -> None:
        while time.time() < deadline:
            _acquire_until_granted(limiter, Priority.POLL)
            sent = time.time()
            with lock:
                stamps.append(sent)

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(stamps)


def _pause_from_elsewhere(key_id: str, seconds: float, paused: EventType, results: Any) -> None:
    """Run in a spawned process: report a 429 the way the HTTP client would."""
    limiter = SharedRateLimiter(_connect(), key_id=key_id, rate=5)
    results.put(time.time())
    limiter.pause(seconds)
    paused.set()


def test_two_processes_together_never_send_faster_than_the_rate(
    make_limiter: LimiterFactory,
) -> None:
    rate = 5.0
    limiter = make_limiter(rate=rate)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_send_for, args=(limiter.key_id, rate, 3.0, barrier, results))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    per_process = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(timeout=10)
        assert process.exitcode == 0

    assert all(len(stamps) >= 3 for stamps in per_process), [len(s) for s in per_process]
    sends = sorted(t for stamps in per_process for t in stamps)
    for i in range(len(sends)):
        for j in range(i + 1, len(sends)):
            window = sends[j] - sends[i]
            assert j - i + 1 <= math.ceil(window * rate) + 1, (i, j, window)
    # Two sends booked on one slot would leave a gap near zero; sleep jitter cannot.
    gaps = [b - a for a, b in itertools.pairwise(sends)]
    assert min(gaps) >= 0.5 / rate, min(gaps)
    # Four acquirers keep the limiter busy, so it must not be far slower than the rate either.
    assert len(sends) >= 0.8 * rate * 3.0


def test_a_pause_from_one_process_holds_acquires_in_another_until_it_ends(
    make_limiter: LimiterFactory,
) -> None:
    limiter = make_limiter(rate=5)
    ctx = multiprocessing.get_context("spawn")
    paused = ctx.Event()
    results = ctx.Queue()
    process = ctx.Process(target=_pause_from_elsewhere, args=(limiter.key_id, 1.5, paused, results))
    process.start()
    assert paused.wait(timeout=30)
    paused_at = results.get(timeout=5)
    process.join(timeout=10)

    refusals = _acquire_until_granted(limiter, Priority.POLL)
    granted_at = time.time()

    assert refusals >= 1
    assert granted_at >= paused_at + 1.5 - 0.02
    assert granted_at <= paused_at + 1.5 + 0.5


def test_a_shorter_pause_never_shortens_a_longer_one(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(rate=0, max_wait=0)
    limiter.pause(1.0)
    limiter.pause(0.1)

    with pytest.raises(Throttled) as refused:
        limiter.acquire(Priority.CANCEL)

    assert refused.value.retry_after > 0.8


def test_under_saturation_cancels_go_before_polls_and_polls_before_orders(
    make_limiter: LimiterFactory,
) -> None:
    limiter = make_limiter(rate=10, max_wait=1.0)
    per_priority, threads_each = 6, 3
    backlog = {p: queue.Queue[Priority]() for p in Priority}
    for priority in Priority:
        for _ in range(per_priority):
            backlog[priority].put(priority)
    grants: list[tuple[float, Priority]] = []
    lock = threading.Lock()
    start = threading.Barrier(len(Priority) * threads_each)

    def work(todo: queue.Queue[Priority]) -> None:
        start.wait()
        while True:
            try:
                priority = todo.get_nowait()
            except queue.Empty:
                return
            _acquire_until_granted(limiter, priority)
            sent = time.monotonic()
            with lock:
                grants.append((sent, priority))

    # A short pause makes everyone arrive at a limiter that is already busy; otherwise the
    # first few requests of any priority get the idle slots.
    limiter.pause(0.3)
    threads = [
        threading.Thread(target=work, args=(backlog[p],))
        for p in Priority
        for _ in range(threads_each)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    order = [priority.name[0] for _, priority in sorted(grants)]
    assert "".join(order) == "C" * per_priority + "P" * per_priority + "O" * per_priority


def test_an_order_is_refused_while_slots_are_booked_ahead(
    client: Redis, make_limiter: LimiterFactory
) -> None:
    limiter = make_limiter(rate=2, max_wait=1.0)
    limiter.acquire(Priority.POLL)
    tat_key = limiter.keys[0]
    booked = client.get(tat_key)

    with pytest.raises(Throttled) as refused:
        limiter.acquire(Priority.ORDER)

    assert 0 < refused.value.retry_after <= limiter.interval
    assert client.get(tat_key) == booked  # a refusal books nothing
    time.sleep(refused.value.retry_after)
    limiter.acquire(Priority.ORDER)


def test_a_cancel_is_refused_rather_than_sleeping_past_max_wait(
    make_limiter: LimiterFactory,
) -> None:
    limiter = make_limiter(rate=1, max_wait=0.4)
    limiter.acquire(Priority.CANCEL)
    began = time.monotonic()

    with pytest.raises(Throttled) as refused:
        limiter.acquire(Priority.CANCEL)

    assert time.monotonic() - began < 0.1
    assert limiter.interval - 0.5 <= refused.value.retry_after <= limiter.interval - 0.4


def test_an_unlimited_rate_never_throttles(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(rate=0)
    began = time.monotonic()

    for _ in range(100):
        for priority in Priority:
            limiter.acquire(priority)

    assert time.monotonic() - began < 2.0


def test_an_unlimited_rate_still_obeys_a_pause(make_limiter: LimiterFactory) -> None:
    limiter = make_limiter(rate=0)
    limiter.pause(0.5)

    with pytest.raises(Throttled):
        limiter.acquire(Priority.ORDER)


def test_an_unlimited_rate_heeds_another_process_pause_within_a_moment(
    make_limiter: LimiterFactory,
) -> None:
    ours, theirs = make_limiter(rate=0), make_limiter(rate=0)
    ours.acquire(Priority.POLL)  # no pause: ours may skip Redis for a moment
    theirs.pause(2.0)  # another process met a 429

    time.sleep(0.1)
    with pytest.raises(Throttled) as refused:
        ours.acquire(Priority.CANCEL)
    assert refused.value.retry_after > 0.5


def test_the_api_key_never_reaches_redis(client: Redis) -> None:
    api_key = f"lsms_live_{uuid.uuid4().hex}"
    limiter = SharedRateLimiter(client, key_id=key_fingerprint(api_key), rate=2, max_wait=0)
    try:
        limiter.acquire(Priority.POLL)
        with pytest.raises(Throttled) as refused:
            limiter.acquire(Priority.ORDER)
        limiter.pause(2.0)

        keys = [key.decode() for key in client.scan_iter(match="legitsms:ratelimit:*")]
        ours = [key for key in keys if limiter.key_id in key]
        assert sorted(ours) == sorted(limiter.keys)
        for key in keys:
            assert api_key not in key
            if client.type(key) == b"string":
                assert api_key.encode() not in (client.get(key) or b"")
        assert api_key not in repr(limiter)
        assert api_key not in str(refused.value)
    finally:
        client.delete(*limiter.keys)


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0, 5.0, 50.0])
@pytest.mark.parametrize("max_wait", [0.2, 1.0, 10.0])
def test_a_more_important_call_may_always_book_further_ahead(rate: float, max_wait: float) -> None:
    # Building a limiter only registers scripts locally; no server is contacted.
    limiter = SharedRateLimiter(Redis(), key_id="abc", rate=rate, max_wait=max_wait)
    cancel, poll, order = (limiter.horizon(p) for p in Priority)

    assert cancel <= max_wait
    if rate > 0:
        assert cancel > poll > order > 0


@pytest.mark.parametrize("key_id", ["", "has space", "a:b", "x" * 65])
def test_a_key_id_that_is_not_a_plain_token_is_rejected(key_id: str) -> None:
    with pytest.raises(ValueError, match="key_id"):
        SharedRateLimiter(Redis(), key_id=key_id, rate=1)
