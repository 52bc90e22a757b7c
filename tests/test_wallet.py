"""The wallet guard's shared state in Redis: one pause per key, the cached balance's floor."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import redis

from orchestrator.provider.wallet import NO_HOLD, PAUSE_READ_TTL, Hold, WalletGuard


def _guard(url: str, reads: list[Decimal], *, floor: int = 7_000_000) -> WalletGuard:
    def read() -> Decimal:
        reads.append(Decimal("10.00"))
        return Decimal("10.00")

    return WalletGuard(
        redis.Redis.from_url(url),
        "sk_test_key",
        pause_seconds=2.0,
        min_balance_micros=floor,
        read_balance=read,
    )


def test_the_first_pause_wins_and_every_process_sees_it(redis_url: str) -> None:
    one, two = _guard(redis_url, []), _guard(redis_url, [])
    assert one.paused() is None
    first = one.pause("insufficient_funds")
    assert first is not None and 0 < first.remaining() <= 2.0
    assert two.pause("insufficient_funds") is None, "only the first sets (and logs) it"
    seen = two.paused()
    assert seen is not None and seen.until == first.until and seen.reason == "insufficient_funds"


class CountingRedis(redis.Redis):
    """Counts the GETs sent, as the pause is read with one."""

    gets = 0

    def get(self, name: Any) -> Any:
        self.gets += 1
        return super().get(name)


def test_a_pause_read_serves_a_process_for_a_fifth_of_a_second(redis_url: str) -> None:
    counted = CountingRedis(connection_pool=redis.ConnectionPool.from_url(redis_url))
    one = WalletGuard(counted, "sk_test_key", pause_seconds=2.0)
    two = _guard(redis_url, [])
    assert [one.paused() for _ in range(20)] == [None] * 20
    assert counted.gets == 1, "twenty purchases in a moment: one read"
    pause = two.pause("insufficient_funds")
    assert pause is not None
    time.sleep(PAUSE_READ_TTL)
    seen = one.paused()
    assert seen is not None and seen.until == pause.until, "another process's pause, in time"
    assert counted.gets == 2


def test_a_pause_set_here_is_seen_here_at_once(redis_url: str) -> None:
    one = _guard(redis_url, [])
    assert one.paused() is None
    assert one.pause("min_balance") is not None
    seen = one.paused()
    assert seen is not None and seen.reason == "min_balance"


def test_purchases_take_their_cap_from_one_balance_read_down_to_the_floor(redis_url: str) -> None:
    reads: list[Decimal] = []
    one, two = _guard(redis_url, reads), _guard(redis_url, reads)
    holds = [one.take(1_000_000), two.take(1_000_000), one.take(1_000_000)]
    assert all(isinstance(hold, Hold) for hold in holds)
    assert two.take(1_000_000) is False, "10.00 less 4 x 1.00 is under the 7.00 floor"
    first, second, _ = holds
    assert isinstance(first, Hold) and isinstance(second, Hold)
    one.give(first, spent=600_000)  # a number charged 0.60 of its 1.00 cap
    assert two.take(1_000_000) is False
    one.give(second)  # nothing bought
    assert isinstance(two.take(1_000_000), Hold)
    assert len(reads) == 1, "the balance is read once per interval, for every process"


def test_a_hold_from_an_older_read_gives_nothing_back(redis_url: str) -> None:
    reads: list[Decimal] = []
    guard = _guard(redis_url, reads)
    hold = guard.take(3_000_000)
    assert isinstance(hold, Hold)
    # The cached figure expires (and the last read's lock with it): the next take reads again.
    balance, _read, lock = guard.keys[1:]
    redis.Redis.from_url(redis_url).delete(balance, lock)
    assert isinstance(guard.take(3_000_000), Hold), "a fresh 10.00 read: 3.00 taken"
    guard.give(hold)  # the old hold's order is in the fresh read already, or will be
    assert guard.take(1_000_000) is False, "10.00 - 3.00 leaves nothing above 7.00"
    assert len(reads) == 2


def test_no_floor_reads_nothing(redis_url: str) -> None:
    reads: list[Decimal] = []
    assert _guard(redis_url, reads, floor=0).take(5_000_000) == NO_HOLD
    assert reads == []
