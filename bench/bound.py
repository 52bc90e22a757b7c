"""The lower bound on a batch's wall time under the provider's rate limit.

The ideal client places every order as early as the rate allows, before any other call,
then reads each code once, as soon after it arrives as the rate allows, and cancels each
code-less order exactly at its timeout. No client ends sooner: an order placed later, to make
room for a read, can only end later, and reads and cancels cannot come before they are due.
(Until November 2026 reads took the next free request before a new order did: that is the
best wall for a client that reads every code the moment it comes, but not a lower bound, and
the naive script, which reads late, beat it in scenario (d).) Which orders get a code, and
after how long, is fixed by the simulator's seed: the bound replays the same draws.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace

from bench.scenarios import COUNTRY_ID, SERVICE_ID, Scenario
from orchestrator.sandbox.simulator import API_PREFIX, Simulator


@dataclass(frozen=True)
class Bound:
    """The ideal run: when it ends, and the requests it needs."""

    wall_seconds: float
    last_order_at: float
    calls: int
    calls_per_number: float
    reads: int
    cancels: int


def code_delays(scenario: Scenario) -> list[float | None]:
    """Seconds from purchase to code for each order in sequence; None for a code never sent.

    Each side runs on its own simulator with the scenario's seed, so its n-th order draws
    exactly these; replayed here on a simulator of our own with a frozen clock.
    """
    config = replace(scenario.sandbox, rate_limit=0.0)
    simulator = Simulator(config, clock=lambda: 0.0)
    headers = {
        "X-API-KEY": config.api_keys[0],
        "Content-Type": "application/x-www-form-urlencoded",
    }
    body = f"service={SERVICE_ID}&country={COUNTRY_ID}".encode()
    for _ in range(scenario.numbers):
        reply = simulator.handle("POST", f"{API_PREFIX}/order", body, headers)
        if reply.status != 200:
            raise RuntimeError(f"replaying the draws: HTTP {reply.status} {reply.body[:200]!r}")
    return [
        None if order.code_due_at is None else order.code_due_at - order.created_at
        for order in simulator.ledger.orders()
    ]


def lower_bound(scenario: Scenario) -> Bound:
    """Schedule the ideal run request by request under the provider's token bucket."""
    delays = code_delays(scenario)
    rate = scenario.rate_limit
    burst = max(1.0, rate)  # the simulator's bucket holds one second of requests
    timeout = max(scenario.code_timeout, scenario.sandbox.cancel_min_age)
    due: list[tuple[float, int]] = []  # (when, 0 read | 1 cancel): calls that must be made
    now, tokens, last_order, reads, cancels = 0.0, burst, 0.0, 0, 0
    placed = 0
    while placed < len(delays) or due:
        # The moment the bucket next holds a whole token (now, without a limit).
        ready = now + max(0.0, 1 - tokens) / rate if rate > 0 else now
        if placed < len(delays):
            at, kind = ready, None
        else:
            at, kind = max(ready, due[0][0]), heapq.heappop(due)[1]
        if rate > 0:
            tokens = min(burst, tokens + (at - now) * rate) - 1
        now = at
        if kind is None:
            delay = delays[placed]
            placed += 1
            last_order = now
            if delay is not None and delay <= timeout:
                heapq.heappush(due, (now + delay, 0))
            else:
                heapq.heappush(due, (now + timeout, 1))
        elif kind == 0:
            reads += 1
        else:
            cancels += 1
    calls = len(delays) + reads + cancels
    return Bound(
        wall_seconds=now,
        last_order_at=last_order,
        calls=calls,
        calls_per_number=calls / len(delays),
        reads=reads,
        cancels=cancels,
    )
