"""Prices shared through Redis: one ``GET /prices`` per service per TTL across processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import redis

from orchestrator.db.engine import create_tables, make_engine
from orchestrator.errors import ProviderError
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.provider.client import LegitSMSClient
from orchestrator.provider.shared_prices import SharedCatalog, SharedPrices
from orchestrator.provider.types import Price
from orchestrator.sandbox.config import DEMO_API_KEY, SandboxConfig
from orchestrator.sandbox.simulator import Simulator
from tests.inprocess import BASE_URL, FakeClock, settings, simulator_transport

TELEGRAM = 1003
TTL = 1.0


class Counted:
    """The simulator behind a transport that counts the requests per path."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.simulator = Simulator(SandboxConfig(seed=5), clock=self.clock.epoch)
        self._inner = simulator_transport(self.simulator)
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            with self._lock:
                path = request.url.path.rsplit("/", 1)[-1]
                self.calls[path] = self.calls.get(path, 0) + 1
            time.sleep(0.1)  # long enough for the other processes to miss too
            return self._inner.handle_request(request)

        return httpx.MockTransport(handle)


@contextmanager
def runtimes(
    folder: Path, redis_url: str, count: int, *, ttl: float = TTL
) -> Iterator[tuple[list[Runtime], Counted]]:
    """``count`` runtimes as separate processes would have them: one provider, one Redis,
    each with its own Redis connection, client and price cache."""
    provider = Counted()
    engine = make_engine(f"sqlite:///{folder / 'shared.db'}")
    create_tables(engine)
    with ExitStack() as stack:
        made = []
        for _ in range(count):
            client = LegitSMSClient(BASE_URL, DEMO_API_KEY, transport=provider.transport())
            stack.callback(client.close)
            shared = SharedPrices(redis.Redis.from_url(redis_url), DEMO_API_KEY, ttl=ttl)
            made.append(
                Runtime(
                    settings=settings(price_cache_ttl=ttl),
                    engine=engine,
                    client=client,
                    shared_prices=shared,
                )
            )
        yield made, provider
    engine.dispose()


def all_at_once(runtimes: list[Runtime], threads: int = 4) -> list[dict[int, Price]]:
    """Every runtime's ``threads`` threads asking for Telegram's prices at the same moment."""
    seen: list[dict[int, Price]] = []
    start = threading.Barrier(len(runtimes) * threads)

    def ask(rt: Runtime) -> None:
        start.wait()
        seen.append(rt.prices.get(TELEGRAM))

    workers = [threading.Thread(target=ask, args=(rt,)) for rt in runtimes for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return seen


def test_two_processes_make_one_prices_call_per_ttl(tmp_path: Path, redis_url: str) -> None:
    with runtimes(tmp_path, redis_url, 2) as (rts, provider):
        seen = all_at_once(rts)
        assert provider.calls == {"prices": 1}
        assert len(seen) == 8 and all(prices == seen[0] for prices in seen)
        assert seen[0]  # the simulator's countries, costs as read
        assert all(rt.prices.fresh(TELEGRAM) for rt in rts)

        time.sleep(TTL + 0.05)
        assert not any(rt.prices.fresh(TELEGRAM) for rt in rts)
        all_at_once(rts)
        assert provider.calls == {"prices": 2}


def test_the_entry_and_every_copy_expire_with_the_ttl(tmp_path: Path, redis_url: str) -> None:
    with runtimes(tmp_path, redis_url, 2) as (rts, provider):
        first, second = rts
        r = redis.Redis.from_url(redis_url)
        key = SharedPrices(r, DEMO_API_KEY, ttl=TTL).key(TELEGRAM)
        first.prices.get(TELEGRAM)
        assert 0 < int(r.pttl(key)) <= TTL * 1000
        time.sleep(TTL / 2)
        second.prices.get(TELEGRAM)  # from Redis, half a TTL old
        assert provider.calls == {"prices": 1}
        time.sleep(TTL / 2 + 0.05)
        # The second's copy lasted what was left of the entry, not a TTL from its own look.
        assert r.get(key) is None
        assert not second.prices.fresh(TELEGRAM)
        second.prices.get(TELEGRAM)
        assert provider.calls == {"prices": 2}


def test_a_holder_that_died_leaves_the_lock_to_lapse(tmp_path: Path, redis_url: str) -> None:
    with runtimes(tmp_path, redis_url, 1) as ([rt], provider):
        r = redis.Redis.from_url(redis_url)
        key = SharedPrices(r, DEMO_API_KEY, ttl=TTL).key(TELEGRAM)
        r.set(f"{key}:lock", "dead-host:1:0", px=400)  # taken, never to be released
        began = time.monotonic()
        rt.prices.get(TELEGRAM)
        waited = time.monotonic() - began
        assert 0.3 <= waited < 2.0  # until the lapse, not the whole lease (10 s)
        assert provider.calls == {"prices": 1}
        assert r.get(f"{key}:lock") is None  # taken at the lapse, released after the read


def test_a_failed_read_frees_the_lock_at_once(tmp_path: Path, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    shared = SharedPrices(r, DEMO_API_KEY, ttl=TTL)

    def down(service_id: int) -> dict[int, Price]:
        raise ProviderError("provider down")

    with pytest.raises(ProviderError):
        shared.get(TELEGRAM, down)
    assert r.get(f"{shared.key(TELEGRAM)}:lock") is None
    assert r.get(shared.key(TELEGRAM)) is None


def test_an_entry_is_data_and_garbage_is_no_entry(tmp_path: Path, redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    shared = SharedPrices(r, DEMO_API_KEY, ttl=TTL)
    hostile = {7: Price(7, "__import__('os').system('x') =1+1", Decimal("0.35"), 3, 50)}
    reads: list[int] = []

    def read(service_id: int) -> dict[int, Price]:
        reads.append(service_id)
        return hostile

    r.set(shared.key(TELEGRAM), b"{not json", px=1000)
    assert shared.get(TELEGRAM, read)[0] == hostile  # read again, stored over it
    assert shared.get(TELEGRAM, read)[0] == hostile  # and read back as it was
    assert reads == [TELEGRAM]
    assert r.get(shared.key(TELEGRAM)) == (
        b"[[7, \"__import__('os').system('x') =1+1\", \"0.35\", 3, 50]]"
    )


def test_a_no_stock_mark_stays_in_its_process(tmp_path: Path, redis_url: str) -> None:
    with runtimes(tmp_path, redis_url, 2) as ([first, second], provider):
        country = next(iter(first.prices.get(TELEGRAM)))
        second.prices.get(TELEGRAM)
        first.prices.mark_out_of_stock(TELEGRAM, country)
        assert first.prices.get(TELEGRAM)[country].count == 0
        assert second.prices.get(TELEGRAM)[country].count > 0
        assert provider.calls == {"prices": 1}


def test_the_prices_a_submit_read_serve_the_workers(tmp_path: Path, redis_url: str) -> None:
    with runtimes(tmp_path, redis_url, 2) as ([submit, worker], provider):
        shared = SharedPrices(redis.Redis.from_url(redis_url), DEMO_API_KEY, ttl=TTL)
        catalog = SharedCatalog(submit.client, shared)
        assert catalog.prices(TELEGRAM) == worker.prices.get(TELEGRAM)
        assert provider.calls == {"prices": 1}
