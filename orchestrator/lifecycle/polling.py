"""When to poll a waiting order next: where codes for its service and country tend to arrive.

The policy (documented in the README, pictured in bench/README.md):

* This installation's history says how long codes took for each (service, country): the
  delays of the last ``HISTORY`` codes received, refreshed every ``REFRESH`` seconds.
* With fewer than ``MIN_SAMPLES`` codes on record, an order is polled every ``poll_interval``.
* Otherwise an order gets ``k`` polls across the arrival window (from the fastest code seen to
  the slowest), at the ages by which 1/k, 2/k, ... k/k of the codes had arrived: each poll
  reads the same share of the codes, so polls are dense where the hazard of arrival is high
  and none is spent before the fastest code seen; the last falls on the slowest code seen,
  so every code that comes is read within the window. When what is left of the arrivals
  spans at most two ``MIN_WAIT``, a single poll at its end covers it.
* ``k`` is what the rate budget affords (:func:`polls_afforded`): the polls' share of the
  limit, spread over the orders waiting, times the window's length; at least one, at most
  ``MAX_POLLS`` (beyond that a poll finds a code too rarely to pay for its call). A tight
  limit thus moves an order's polls to the end of its window, where one poll reads every code.
* The polls' share is spare budget, never wall time (:func:`poll_share`). While numbers remain
  to be bought, the batch ends about a code timeout after its last purchase, so polls may
  take only the share that stretches the buying by at most ``WALL_SLACK`` of the batch (its
  numbers at the full rate, plus the code timeout): little in a large purchase,
  ``POLL_SHARE`` at most. Once nothing is left to buy they take ``POLL_SHARE_ALONE``,
  leaving the rest to cancels. While buying, a share gate in
  Redis holds every process's polls to :func:`poll_share` (``Runtime.admit_poll``), and a
  poll put off for the purchases is put off to about their expected end, then planned again
  with the budget they leave; those put off come back spread over the time they take at the
  polls' share alone, the oldest order first (its code, if any, has waited longest).
* Past the slowest code seen, the order is probably one that never gets a code: it gets one
  more look at ``TAIL_LOOK`` times the slowest code's age (in case the model, learnt from the
  codes already in, is short), then none: the cancel at the give-up time reads a late code.
  Without a rate limit of our own, that holds only once an order of the service and country
  has been seen still without its code at ``TAIL_LOOK`` times the slowest code's age. Until
  then the model is censored (:attr:`ArrivalModel.censored`): the first codes in are the
  fastest, as no order has yet been watched longer, so its slowest says nothing of the tail,
  and an order past it is polled at ``poll_interval``, as without a model. Under a limit
  a censored model's tail gets the one look, not polls at ``poll_interval``: they would cost
  calls per number, and sparse polls leave the model's slowest code (counted to the middle of
  long spans) at about half the age orders are watched to, so the tail would stay censored
  (bench (d): 4.25 calls per number, not 3.1). Once the tail was watched (the model is no
  longer censored), an order past the slowest code gets no look at all under a limit: most
  such orders never get a code, and a look at each would cost a fifth of a call per number
  in bench (d), where every call is two seconds of the key's time. A look planned before
  then is not sent either: under a limit a poll falling due asks the policy again first
  (``settle._poll``).
* Orders polled at the configured interval (no model yet) or in the tail are polled no more
  often than the polls' share allows (:func:`budget_floor`) when the limit is tight. The
  shared rate limit has the last word: a poll that finds no slot comes back later.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

HISTORY = 500  # most recent codes per (service, country) that the model learns from
MIN_SAMPLES = 10  # below this, the history says too little: poll at the configured interval
MAX_POLLS = 4  # polls per order across the arrival window, at most, however much budget is left
MIN_WAIT = 0.5  # seconds: never poll one order more often than this
REFRESH = 15.0  # seconds a learnt model is reused before the history is read again (it grows
# towards the slow codes as the first orders age: a stale model calls them late, past its end)
REFRESH_LEARNING = 2.0  # ...and while it has too few samples to be used (a cheap query)
TAIL_LOOK = 2  # past the slowest code seen, one more look at TAIL_LOOK x its age, then none
NO_MORE = 1e9  # seconds: no poll planned; the cancel at the give-up time reads a late code
WALL_SLACK = 0.05  # share of the batch's time that polls may add to it while buying
POLL_SHARE = 0.5  # of the rate limit that polls plan to use while buying, at most
POLL_SHARE_ALONE = 0.9  # ...and once nothing is left to buy; cancels keep the rest
COUNT_REFRESH = 2.0  # seconds a count of waiting orders is reused


@dataclass(frozen=True)
class ArrivalModel:
    """The observed delays from purchase to code, sorted, for one service and country, and
    the oldest age at which an order was seen without its code (none seen: no cut-off)."""

    delays: tuple[float, ...]
    seen_waiting: float = math.inf

    def share_by(self, age: float) -> float:
        """The share of codes that had arrived by ``age`` seconds (the empirical CDF)."""
        return bisect.bisect_right(self.delays, age) / len(self.delays)

    @property
    def window(self) -> float:
        """Seconds from the fastest code seen to the slowest."""
        return self.delays[-1] - self.delays[0]

    @property
    def censored(self) -> bool:
        """Whether the slowest code seen may be far from the slowest to come: the delays are
        cut off at the age to which orders have been watched, and none has yet been seen
        without its code at ``TAIL_LOOK`` times the slowest delay (so the model would claim
        a tail it has not observed)."""
        return self.seen_waiting < TAIL_LOOK * self.delays[-1]

    def age_at(self, share: float) -> float:
        """The age by which ``share`` of the codes had arrived (an empirical quantile)."""
        index = min(len(self.delays) - 1, max(0, int(share * len(self.delays)) - 1))
        return self.delays[index]


def next_poll(
    model: ArrivalModel | None,
    age: float,
    *,
    interval: float,
    polls: int = MAX_POLLS,
    limited: bool = False,
) -> float:
    """Seconds to wait before polling an order that is ``age`` seconds old and still waiting,
    with ``polls`` polls across the arrival window (see :func:`polls_afforded`), under a rate
    limit of our own or not (``limited``: the censored tail gets the one look too)."""
    if model is None or len(model.delays) < MIN_SAMPLES:
        return interval
    slowest = model.delays[-1]
    if age >= slowest:
        if model.censored and not limited:
            return interval  # the model knows nothing past its slowest code yet
        if limited and not model.censored:
            return NO_MORE  # its tail was watched: a code this late is rare, the cancel reads it
        # Mostly orders never served: one look in case the model's slowest is too short
        # (it learns from codes already in), then the cancel reads whatever came.
        look = TAIL_LOOK * slowest - age
        return max(interval, look) if look > MIN_WAIT else NO_MORE
    if slowest - age <= 2 * MIN_WAIT:
        # What is left fits in two of the shortest waits: one poll at its end reads every
        # code; splitting it would spend a second poll on most of them to save < MIN_WAIT.
        return max(slowest - age, MIN_WAIT)
    k = max(1, polls)
    for j in range(1, k + 1):
        at = model.age_at(j / k)  # the age by which j/k of the codes had arrived
        if at - age >= MIN_WAIT:
            return at - age
    return max(slowest - age, MIN_WAIT)


def poll_wait(
    model: ArrivalModel | None,
    age: float,
    *,
    interval: float,
    waiting: int,
    rate: float,
    to_buy: int = 0,
    batch: int = 0,
    give_up: float = 0.0,
) -> float:
    """The policy whole: seconds until the next poll of an order ``age`` seconds old, with
    ``waiting`` orders sharing ``rate`` requests per second (0: no limit) while ``to_buy``
    numbers are still to be bought of a batch of ``batch``, each given up ``give_up`` seconds
    after its purchase."""
    share = poll_share(to_buy, rate, give_up, batch=batch)
    learnt = model is not None and len(model.delays) >= MIN_SAMPLES
    if not learnt or rate <= 0:
        polls = MAX_POLLS
    else:
        assert model is not None
        polls = polls_afforded(waiting, rate * share, model.window)
    wait = next_poll(model, age, interval=interval, polls=polls, limited=rate > 0)
    if learnt and model is not None and age < model.delays[-1]:
        return wait  # within the window: ``polls`` already fits the budget
    floor = budget_floor(waiting, rate * share)
    if to_buy > 0 and rate > 0:
        # Put off for the purchases, a poll comes back when they should be done, to be
        # planned again with the budget they leave (a delayed message cannot be called back).
        # The polls put off all fall due then, and take a while at the polls' share alone:
        # the orders that will then be oldest come first, as their codes have waited longest.
        buying = to_buy / rate / (1 - share)
        first_age = max(batch, to_buy) / rate / (1 - share)  # the batch's first order's, then
        younger = max(0.0, 1 - (age + buying) / first_age)
        drain = waiting / (rate * POLL_SHARE_ALONE)
        floor = min(floor, max(interval, buying + younger * drain))
    return max(wait, floor)


def poll_share(to_buy: int, rate: float, give_up: float, *, batch: int = 0) -> float:
    """The share of ``rate`` requests per second that polls may plan to use while ``to_buy``
    numbers are left to buy, of a batch of ``batch`` numbers (those of the jobs under way),
    each given up ``give_up`` seconds after its purchase.

    The batch's purchases take b = batch / rate seconds at the full rate, and with polls at a
    share s they take b / (1 - s); the batch, about b + give_up long, may grow by WALL_SLACK of
    it: b s / (1 - s) <= WALL_SLACK (b + give_up), so s = x / (1 + x), x = WALL_SLACK (b +
    give_up) / b. The share is the batch's, the same at its first purchase and its last: one
    taken from what was left to buy grew as it shrank, and compounded: bench (b)'s buying
    took 23 s longer, where 8 s were allowed.
    """
    if to_buy <= 0 or rate <= 0:
        return POLL_SHARE_ALONE
    buying = max(batch, to_buy) / rate
    x = WALL_SLACK * (buying + give_up) / buying
    return min(POLL_SHARE, x / (1 + x))


def polls_afforded(waiting: int, poll_rate: float, window: float) -> int:
    """Polls per order across an arrival window of ``window`` seconds that keep all ``waiting``
    orders' polls within ``poll_rate`` requests per second (no limit: ``MAX_POLLS``)."""
    if poll_rate <= 0:
        return MAX_POLLS
    return max(1, min(MAX_POLLS, int(window * poll_rate / max(waiting, 1))))


def budget_floor(waiting: int, poll_rate: float) -> float:
    """The shortest wait between two polls of one order that keeps all ``waiting`` orders'
    polls within ``poll_rate`` requests per second (0: no limit, no floor)."""
    if poll_rate <= 0:
        return 0.0
    return waiting / poll_rate


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
    """Models per (service, country), learnt from the database and reused for ``REFRESH`` s.

    ``load`` gives the delays on record and the oldest age at which an order was seen waiting.
    """

    def __init__(self, load: Callable[[int, int], tuple[Sequence[float], float]]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._models: dict[tuple[int, int], tuple[float, ArrivalModel | None]] = {}

    def model(self, service_id: int, country_id: int) -> ArrivalModel | None:
        key = (service_id, country_id)
        with self._lock:
            entry = self._models.get(key)
            if entry is not None and time.monotonic() - entry[0] < _ttl(entry[1]):
                return entry[1]
        loaded, seen_waiting = self._load(service_id, country_id)
        delays = sorted(d for d in loaded if d >= 0)
        model = ArrivalModel(tuple(delays), seen_waiting) if delays else None
        with self._lock:
            self._models[key] = (time.monotonic(), model)
        return model


def _ttl(model: ArrivalModel | None) -> float:
    learning = model is None or len(model.delays) < MIN_SAMPLES
    return REFRESH_LEARNING if learning else REFRESH
