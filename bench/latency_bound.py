"""How low code latency can go under the rate limit when the wall time must stay near its bound.

A poller that cannot see codes arrive (it learns of one only by polling) must, to read a code
within L seconds wherever it falls in the arrival window, poll each waiting order at most L
seconds apart across that window. Under the rate limit those polls compete with the orders,
and the orders must all be out by the time that keeps the wall within ``WALL_FACTOR`` of the
lower bound (the last order, which may be one that never gets a code, ends a timeout after
it). This replays the scenario's seeded draws (as :mod:`bench.bound` does) request by request
for such pollers, and keeps the best:

* orders take a slot when no poll wants it, or when the orders left need a share ``pace``
  of the slots left before that time (``pace`` swept: 1 gives polls everything the orders
  can spare, lower values send the orders earlier);
* each waiting order is polled every ``gap`` seconds from the fastest code's age, the last
  poll on the slowest code's (``gap`` swept; equal gaps suit the simulator's uniform delays),
  the earliest-due poll first; a code-less order is cancelled at its timeout, which reads a
  late code.

It is the best of that family, not a proof over every poller; the family is what a poller
knowing the true arrival distribution (better than the orchestrator, which learns it) would
do, and it is given the provider's full rate, without the orchestrator's margin.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from bench.bound import code_delays, lower_bound
from bench.scenarios import Scenario

WALL_FACTOR = 1.10  # issue 16: wall time at most 1.10x the lower bound
PACES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)
GAPS = (2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0, 25.0, 30.0, 40.0, 55.0)


@dataclass(frozen=True)
class LatencyBound:
    """The best p95 of the family, and the run that reached it."""

    p50: float
    p95: float
    gap: float
    pace: float
    calls_per_number: float
    wall_seconds: float
    last_order_by: float


def _percentile(values: list[float], share: float) -> float:
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, int(share * len(ranked)))]


def replay(
    scenario: Scenario,
    delays: list[float | None],
    *,
    last_order_by: float,
    gap: float,
    pace: float = 1.0,
) -> tuple[list[float], int, float]:
    """One poller: the code latencies it reaches, the calls it makes, and its wall time."""
    rate = scenario.rate_limit
    burst = max(1.0, rate)
    low, high = scenario.sandbox.code_delay
    timeout = max(scenario.code_timeout, scenario.sandbox.cancel_min_age)
    ages = [min(low + gap * k, high) for k in range(1, int((high - low) / gap) + 2)]
    ages = sorted(set(ages))
    due: list[tuple[float, int, int, int]] = []  # (when, 0 poll | 1 cancel, order, poll index)
    bought: list[float | None] = [None] * len(delays)
    open_ = [False] * len(delays)
    latencies: list[float] = []
    now, tokens, placed, calls = 0.0, burst, 0, 0
    while placed < len(delays) or due:
        ready = now + max(0.0, 1 - tokens) / rate
        left = len(delays) - placed
        must_order = left > 0 and left >= (last_order_by - ready) * rate * pace
        if left and (must_order or not (due and due[0][0] <= ready)):
            at, kind, order, k = ready, -1, placed, 0
        else:
            when, kind, order, k = heapq.heappop(due)
            if not open_[order]:
                continue  # read already, or cancelled: no call
            at = max(ready, when)
        tokens = min(burst, tokens + (at - now) * rate) - 1
        now, calls = at, calls + 1
        if kind == -1:
            placed += 1
            bought[order], open_[order] = now, True
            heapq.heappush(due, (now + ages[0], 0, order, 0))
            heapq.heappush(due, (now + timeout, 1, order, 0))
            continue
        start, delay = bought[order], delays[order]
        assert start is not None
        arrived = delay is not None and start + delay <= now
        if arrived:
            assert delay is not None
            latencies.append(now - start - delay)
        if arrived or kind == 1:
            open_[order] = False
        elif k + 1 < len(ages):
            heapq.heappush(due, (start + ages[k + 1], 0, order, k + 1))
    return latencies, calls, now


def best_latency(
    scenario: Scenario, *, wall_factor: float = WALL_FACTOR, max_calls: float | None = None
) -> LatencyBound | None:
    """The lowest p95 over the family, with every order out in time for ``wall_factor`` and
    at most ``max_calls`` API calls per number (None: any); None if no member keeps to both.
    """
    bound = lower_bound(scenario)
    timeout = max(scenario.code_timeout, scenario.sandbox.cancel_min_age)
    last_order_by = wall_factor * bound.wall_seconds - timeout
    delays = code_delays(scenario)
    best: LatencyBound | None = None
    for gap in GAPS:
        for pace in PACES:
            latencies, calls, wall = replay(
                scenario, delays, last_order_by=last_order_by, gap=gap, pace=pace
            )
            found = LatencyBound(
                p50=_percentile(latencies, 0.50),
                p95=_percentile(latencies, 0.95),
                gap=gap,
                pace=pace,
                calls_per_number=calls / len(delays),
                wall_seconds=wall,
                last_order_by=last_order_by,
            )
            if max_calls is not None and found.calls_per_number > max_calls:
                continue
            if best is None or found.p95 < best.p95:
                best = found
    return best


if __name__ == "__main__":
    import sys

    from bench.scenarios import scenarios

    for group in ("b", "d"):
        scenario = scenarios(group, quick=False)[0]
        for factor in [float(f) for f in sys.argv[1:]] or [WALL_FACTOR]:
            for calls in (None, {"b": 3.5, "d": 2.4}[group]):
                print(
                    group,
                    factor,
                    calls,
                    best_latency(scenario, wall_factor=factor, max_calls=calls),
                )
