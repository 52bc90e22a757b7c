"""The figures of ``orchestrator report``: one job's slots tallied per service and country,
why numbers ended without a code, how long codes took, and what happened when.

They are computed from the rows ``queries.export_rows`` reads and the money
``queries.money_by_service_country`` sums (the one spend rule, in the database);
``report_page`` draws them, and embeds ``Report.as_json()`` for anyone who wants to re-plot.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.db.models import LIVE_STATES, Job, State
from orchestrator.jobs.export import Row
from orchestrator.money import from_micros, shown

NO_COUNTRY = "(no country)"  # slots that failed before a country was chosen
SETTLED = frozenset({State.RECEIVED, State.CANCELLED, State.EXPIRED})  # orders with a known end
_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200)
_MAX_BINS = 12
# Why a cancel was sent (``Activation.cancel_reason``), in the words of the README.
_CANCELS = {
    "timeout": "no code in time",
    "job_cancelled": "job cancelled",
    "target_met": "not needed: the target had its codes",
    "over_cap": "charged above the cap",
}

GroupKey = tuple[int, int | None]  # (service id, country id)
Money = tuple[int, int]  # (spent, refunded) in micros


def iso(value: datetime | None) -> str | None:
    """A timestamp for machines: ISO 8601 UTC, as the CSV writes it."""
    return value.isoformat().replace("+00:00", "Z") if value else None


def money(micros: int | None) -> str | None:
    """Money for the JSON and the page: ``1.80``, None when unknown."""
    return None if micros is None else shown(from_micros(micros))


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class GroupStats:
    """One service in one country: its share of the job."""

    service_id: int
    service: str
    country_id: int | None
    country: str
    numbers: int = 0  # slots that chose this country
    bought: int = 0  # of them, orders placed
    orders: int = 0  # orders with a known end (received, cancelled, expired)
    received: int = 0
    spend_micros: int = 0  # charged and not refunded (queries.CHARGED)
    refunded_micros: int = 0  # charged, then refunded by a cancel

    @property
    def success_rate(self) -> float | None:
        """Codes received per order that ended; None before any ended."""
        return _rate(self.received, self.orders)

    @property
    def cost_per_code_micros(self) -> int | None:
        """What one code cost: the spend (refunds deducted) over the codes received."""
        return round(self.spend_micros / self.received) if self.received else None

    def as_json(self) -> dict[str, Any]:
        return {
            "service_id": self.service_id,
            "service": self.service,
            "country_id": self.country_id,
            "country": self.country,
            "numbers": self.numbers,
            "bought": self.bought,
            "orders": self.orders,
            "received": self.received,
            "success_rate": self.success_rate,
            "spend": money(self.spend_micros),
            "refunded": money(self.refunded_micros),
            "cost_per_code": money(self.cost_per_code_micros),
        }


@dataclass
class Timeline:
    """When the job's orders were bought, got their code, were cancelled: seconds from the
    submission, sorted, so each list read in order is a cumulative count."""

    bought: list[float] = field(default_factory=list)
    codes: list[float] = field(default_factory=list)
    cancelled: list[float] = field(default_factory=list)

    @property
    def last(self) -> float:
        return max([0.0, *self.bought, *self.codes, *self.cancelled])

    def as_json(self) -> dict[str, list[float]]:
        return {"bought": self.bought, "codes": self.codes, "cancelled": self.cancelled}


@dataclass
class Report:
    """Everything the page shows, computed from one job's rows."""

    job: Job
    counts: dict[State, int]
    groups: list[GroupStats]
    failures: list[tuple[str, str, int]]  # (state, why, numbers), the most frequent first
    arrivals: list[float]  # seconds from order to code, one per received code, sorted
    timeline: Timeline
    bins: list[tuple[float, float, int]] = field(default_factory=list)  # (from, to, count)

    @property
    def spend_micros(self) -> int:
        return sum(g.spend_micros for g in self.groups)

    @property
    def refunded_micros(self) -> int:
        return sum(g.refunded_micros for g in self.groups)

    @property
    def success_rate(self) -> float | None:
        return _rate(self.counts[State.RECEIVED], sum(self.counts[s] for s in SETTLED))

    @property
    def cost_per_code_micros(self) -> int | None:
        codes = self.counts[State.RECEIVED]
        return round(self.spend_micros / codes) if codes else None

    @property
    def duration(self) -> float | None:
        """Seconds from submission to the last number's end; None while the job runs."""
        job = self.job
        return (job.finished_at - job.created_at).total_seconds() if job.finished_at else None

    @property
    def budget_used(self) -> float | None:
        budget = self.job.budget_micros
        return round(self.spend_micros / budget, 4) if budget else None

    def arrival(self, share: float) -> float | None:
        """The arrival time within which ``share`` of the codes came (nearest rank)."""
        values = self.arrivals
        return values[max(0, math.ceil(share * len(values)) - 1)] if values else None

    def as_json(self) -> dict[str, Any]:
        job = self.job
        return {
            "job": {
                "id": job.id,
                "name": job.name,
                "status": job.status.value,
                "created_at": iso(job.created_at),
                "finished_at": iso(job.finished_at),
                "duration_seconds": self.duration,
                "budget": money(job.budget_micros),
                "spend": money(self.spend_micros),
                "refunded": money(self.refunded_micros),
                "budget_used": self.budget_used,
                "success_rate": self.success_rate,
                "cost_per_code": money(self.cost_per_code_micros),
                "numbers": sum(self.counts.values()),
                "counts": {state.value: n for state, n in self.counts.items()},
            },
            "groups": [g.as_json() for g in self.groups],
            "failures": [{"state": s, "reason": r, "numbers": n} for s, r, n in self.failures],
            "arrival": {
                "seconds": self.arrivals,
                "p50": self.arrival(0.5),
                "p95": self.arrival(0.95),
                "histogram": [{"from": a, "to": b, "count": n} for a, b, n in self.bins],
            },
            "timeline": self.timeline.as_json(),
        }


def build_report(job: Job, rows: Iterable[Row], money_by_group: Mapping[GroupKey, Money]) -> Report:
    """Tally the job's slots (``queries.export_rows``) by state, service and country; the money
    is the database's (``queries.money_by_service_country``)."""
    counts = dict.fromkeys(State, 0)
    groups: dict[GroupKey, GroupStats] = {}
    failures: Counter[tuple[str, str]] = Counter()
    arrivals: list[float] = []
    timeline = Timeline()

    def since_start(moment: datetime) -> float:
        return round((moment - job.created_at).total_seconds(), 1)

    for _, target, act in rows:
        counts[act.state] += 1
        country = act.country_name or (str(act.country_id) if act.country_id else NO_COUNTRY)
        key = (act.service_id, act.country_id)
        stats = groups.setdefault(
            key, GroupStats(act.service_id, target.service_name, act.country_id, country)
        )
        stats.numbers += 1
        stats.bought += act.ordered_at is not None
        stats.orders += act.state in SETTLED
        stats.received += act.state is State.RECEIVED
        if act.ordered_at:
            timeline.bought.append(since_start(act.ordered_at))
        if act.state is State.RECEIVED and act.code_at:
            timeline.codes.append(since_start(act.code_at))
            if act.ordered_at:
                arrivals.append(round((act.code_at - act.ordered_at).total_seconds(), 1))
        if act.state is State.CANCELLED and act.finished_at:
            timeline.cancelled.append(since_start(act.finished_at))
        why = failure_reason(act.state, act.cancel_reason, act.error)
        if why:
            failures[(act.state.value, why)] += 1
    for key, stats in groups.items():
        stats.spend_micros, stats.refunded_micros = money_by_group.get(key, (0, 0))
    for series in (timeline.bought, timeline.codes, timeline.cancelled, arrivals):
        series.sort()
    return Report(
        job=job,
        counts=counts,
        groups=sorted(
            groups.values(), key=lambda g: (-g.spend_micros, -g.numbers, g.service, g.country)
        ),
        failures=[(s, r, n) for (s, r), n in sorted(failures.items(), key=lambda i: -i[1])],
        arrivals=arrivals,
        timeline=timeline,
        bins=histogram(arrivals),
    )


def failure_reason(state: State, cancel_reason: str | None, error: str | None) -> str | None:
    """Why a number ended without a code, in a few words; None if it got one or is still live.

    ``error`` may quote the provider: it is text to escape wherever it is shown.
    """
    if state is State.RECEIVED or state in LIVE_STATES:
        return None
    if state is State.CANCELLED and (cancel_reason or "timeout") in _CANCELS:
        return _CANCELS[cancel_reason or "timeout"]
    return error or cancel_reason or "no reason recorded"


def histogram(values: Sequence[float]) -> list[tuple[float, float, int]]:
    """At most a dozen equal bins from 0, each a round number of seconds wide."""
    if not values:
        return []
    top = max(*values, 0.1)
    width = next((s for s in _STEPS if top / s <= _MAX_BINS), math.ceil(top / _MAX_BINS))
    count = max(1, math.ceil(top / width))  # the maximum itself goes in the last bin
    bins = [[round(i * width, 1), round((i + 1) * width, 1), 0] for i in range(count)]
    for value in values:
        bins[min(int(value // width), count - 1)][2] += 1
    return [(float(a), float(b), int(n)) for a, b, n in bins]
