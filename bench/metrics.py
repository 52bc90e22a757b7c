"""Figures of one run, read from the simulator's ledger and what the side says it stored."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.processes import Usage
from orchestrator.sandbox.ledger import Ledger, OrderState

ENDPOINTS = ("POST /order", "GET /status", "POST /set_status", "GET /services", "GET /prices")


@dataclass(frozen=True)
class Observed:
    """What a side reports of its own run: when it ran, the codes it kept and when."""

    side: str
    started_at: float  # the user's command was launched
    finished_at: float  # every number had ended
    codes: Mapping[str, str]  # order id -> code stored
    stored_at: Mapping[str, float]  # order id -> wall time the code was stored
    usage: Sequence[Usage]
    notes: dict[str, Any] = field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(observed: Observed, ledger: Ledger, numbers: int) -> dict[str, Any]:
    """Every figure the report prints for one side of one scenario, JSON-ready."""
    now = time.time()
    requests = ledger.requests()
    calls: dict[str, int] = {}
    throttled: dict[str, int] = {}
    for _at, endpoint, status in requests:
        calls[endpoint] = calls.get(endpoint, 0) + 1
        if status == 429:
            throttled[endpoint] = throttled.get(endpoint, 0) + 1
    total_calls = sum(calls.values())

    orders = ledger.orders()
    states = {state.value: 0 for state in OrderState}
    latencies: list[float] = []
    missed = wrong = 0
    for order in orders:
        states[order.state(now).value] += 1
        stored = observed.stored_at.get(order.order_id)
        if stored is not None and order.code_due_at is not None:
            latencies.append(stored - order.code_due_at)
            wrong += observed.codes.get(order.order_id) != order.code
        elif order.state(now) is OrderState.RECEIVED:
            missed += 1  # the provider had a code for it, and it was never kept

    wall = observed.finished_at - observed.started_at
    # Workers poll Redis even when idle; without that, what the batch itself cost.
    idle = observed.notes.get("worker_idle_cpu_per_second", 0.0)
    busy_cpu = sum(u.batch_cpu_seconds for u in observed.usage) - idle * observed.notes.get(
        "worker_seconds", 0.0
    )
    created = [order.created_at for order in orders]
    cpu = sum(u.cpu_seconds for u in observed.usage)
    batch_cpu = sum(u.batch_cpu_seconds for u in observed.usage)
    return {
        "side": observed.side,
        "numbers": numbers,
        "wall_seconds": wall,
        "numbers_per_second": numbers / wall if wall > 0 else None,
        "calls": calls,
        "calls_total": total_calls,
        "calls_per_number": {k: v / numbers for k, v in sorted(calls.items())},
        "calls_per_number_total": total_calls / numbers,
        "rate_limited": sum(throttled.values()),
        "rate_limited_by_endpoint": throttled,
        "latency_seconds": {
            "count": len(latencies),
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "max": max(latencies, default=None),
        },
        "orders": len(orders),
        # When, from the start, the first and the last number was bought.
        "first_order_after_seconds": min(created) - observed.started_at if created else None,
        "last_order_after_seconds": max(created) - observed.started_at if created else None,
        "order_states": states,
        "codes_stored": len(latencies),
        "codes_missed": missed,
        "codes_wrong": wrong,
        "cpu_seconds": cpu,
        "batch_cpu_seconds": batch_cpu,
        "cpu_ms_per_number": 1000 * cpu / numbers,
        "batch_cpu_ms_per_number": 1000 * batch_cpu / numbers,
        "busy_cpu_ms_per_number": 1000 * busy_cpu / numbers,
        "timeline": _timeline(requests, observed.started_at),
        "processes": [asdict(u) for u in observed.usage],
        "peak_rss_mb": {u.role: u.peak_rss_mb for u in observed.usage},
        "notes": observed.notes,
    }


TIMELINE_STEP = 10.0  # seconds per bucket of the request timeline


def _timeline(requests: Sequence[tuple[float, str, int]], start: float) -> list[dict[str, Any]]:
    """Requests per bucket of ``TIMELINE_STEP`` seconds from the start, by kind: for diagnosis."""
    buckets: dict[int, dict[str, Any]] = {}
    for at, endpoint, status in requests:
        index = int((at - start) // TIMELINE_STEP)
        bucket = buckets.setdefault(index, {"from_second": index * TIMELINE_STEP})
        kind = "429" if status == 429 else endpoint
        bucket[kind] = bucket.get(kind, 0) + 1
    return [buckets[i] for i in sorted(buckets)]
