"""When to poll a waiting order next: where codes for its service and country tend to arrive.

The policy (documented in the README):

* This installation's history says how long codes took for each (service, country): the
  delays of the last ``HISTORY`` codes received, refreshed every ``REFRESH`` seconds.
* With fewer than ``MIN_SAMPLES`` codes on record, an order is polled every ``poll_interval``.
* Otherwise polls are spaced so that each one covers the same share (``STEP``) of the codes
  that will arrive: dense where codes usually come, sparse where they rarely do, none before
  the fastest code seen. The wait is kept between ``MIN_WAIT`` and ``poll_interval`` x 6.
* When what is left of the arrivals (up to the slowest code seen) spans at most two
  ``MIN_WAIT``, a single poll at its end covers it.
* Past the slowest code seen, the order is probably one that never gets a code: it is polled
  ever more rarely (half its age) until the cancel, which reads a late code anyway.
* Polls plan to use at most ``POLL_SHARE`` of the shared rate limit while numbers remain to
  be bought: with N orders waiting and a limit of R requests/s, no order is polled more often
  than every N / (R x POLL_SHARE) seconds, so new orders and cancels keep the rest of the
  budget (polls still win a slot over an order when both want it now). Once nothing is left
  to buy, polls plan to use ``POLL_SHARE_ALONE`` of it, leaving the rest to cancels.
* The shared rate limit has the last word: a poll that finds no slot comes back later.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

HISTORY = 500  # most recent codes per (service, country) that the model learns from
MIN_SAMPLES = 20  # below this, the history says too little: poll at the configured interval
STEP = 0.12  # share of the arrival distribution one poll covers (about 8 polls across it)
MIN_WAIT = 0.5  # seconds: never poll one order more often than this
REFRESH = 60.0  # seconds a learnt model is reused before the history is read again
REFRESH_LEARNING = 2.0  # ...and while it has too few samples to be used (a cheap query)
MAX_STRETCH = 6  # the longest wait, in poll intervals, while codes are still expected
TAIL_SHARE = 2  # past the slowest code seen, wait age / TAIL_SHARE: mostly orders never served
POLL_SHARE = 0.5  # of the rate limit that polls plan to use; orders and cancels keep the rest
POLL_SHARE_ALONE = 0.9  # ...and once nothing is left to buy; cancels keep the rest
COUNT_REFRESH = 2.0  # seconds a count of waiting orders is reused


@dataclass(frozen=True)
class ArrivalModel:
    """The observed delays from purchase to code, sorted, for one service and country."""

    delays: tuple[float, ...]

    def share_by(self, age: float) -> float:
        """The share of codes that had arrived by ``age`` seconds (the empirical CDF)."""
        return bisect.bisect_right(self.delays, age) / len(self.delays)

    def age_at(self, share: float) -> float:
        """The age by which ``share`` of the codes had arrived (an empirical quantile)."""
        index = min(len(self.delays) - 1, max(0, int(share * len(self.delays)) - 1))
        return self.delays[index]


def next_poll(model: ArrivalModel | None, age: float, *, interval: float) -> float:
    """Seconds to wait before polling an order that is ``age`` seconds old and still waiting."""
    if model is None or len(model.delays) < MIN_SAMPLES:
        return interval
    slowest = model.delays[-1]
    if age >= slowest:
        return max(interval, age / TAIL_SHARE)
    if slowest - age <= 2 * MIN_WAIT:
        # What is left fits in two of the shortest waits: one poll at its end reads every
        # code; splitting it would spend a second poll on most of them to save < MIN_WAIT.
        return max(slowest - age, MIN_WAIT)
    target = min(1.0, model.share_by(age) + STEP)
    wait = model.age_at(target) - age
    return min(max(wait, MIN_WAIT), interval * MAX_STRETCH)


def budget_floor(waiting: int, rate: float, *, buying: bool = True) -> float:
    """The shortest wait between two polls of one order that keeps all ``waiting`` orders'
    polls within their share of ``rate`` requests per second (0: no limit, no floor).

    The share is ``POLL_SHARE`` while numbers are still ``buying``, else ``POLL_SHARE_ALONE``.
    """
    if rate <= 0:
        return 0.0
    return waiting / (rate * (POLL_SHARE if buying else POLL_SHARE_ALONE))


class CachedCount:
    """A count of slots (across all jobs), taken again every ``COUNT_REFRESH`` seconds."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count
        self._lock = threading.Lock()
        self._value = (float("-inf"), 0)

    def get(self) -> int:
        with self._lock:
            at, value = self._value
            if time.monotonic() - at < COUNT_REFRESH:
                return value
        value = self._count()
        with self._lock:
            self._value = (time.monotonic(), value)
        return value


class ArrivalCache:
    """Models per (service, country), learnt from the database and reused for ``REFRESH`` s."""

    def __init__(self, load: Callable[[int, int], Sequence[float]]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._models: dict[tuple[int, int], tuple[float, ArrivalModel | None]] = {}

    def model(self, service_id: int, country_id: int) -> ArrivalModel | None:
        key = (service_id, country_id)
        with self._lock:
            entry = self._models.get(key)
            if entry is not None and time.monotonic() - entry[0] < _ttl(entry[1]):
                return entry[1]
        delays = sorted(d for d in self._load(service_id, country_id) if d >= 0)
        model = ArrivalModel(tuple(delays)) if delays else None
        with self._lock:
            self._models[key] = (time.monotonic(), model)
        return model


def _ttl(model: ArrivalModel | None) -> float:
    learning = model is None or len(model.delays) < MIN_SAMPLES
    return REFRESH_LEARNING if learning else REFRESH
