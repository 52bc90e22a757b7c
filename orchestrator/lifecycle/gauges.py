"""The money gauges of ``/metrics``, read from the database at each scrape.

Numbers by state, codes, spend, refunds, value in doubt, refunds at risk and the circuit
breakers are not counted in memory: every scrape reads them (one query function,
``money_figures.read``, and the breakers as ``status`` reads them), so any process on any
host shows the truth and nothing drifts after a restart. Only active jobs and jobs finished in
the last ``SCOPE`` are shown: scrapes stay cheap and the label sets few. Register this
collector once per scraped registry (``workers/metrics_server.py``): two would be summed.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orchestrator.config import Settings
from orchestrator.db import money_figures, wallet_ledger
from orchestrator.db.engine import reading
from orchestrator.db.models import State, utcnow
from orchestrator.lifecycle.breaker import open_breakers
from orchestrator.lifecycle.cancels import give_up_after
from orchestrator.money import from_micros
from orchestrator.provider.ratelimit import key_fingerprint

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlalchemy import Engine

log = structlog.get_logger(__name__)

SCOPE = timedelta(hours=24)  # jobs that finished longer ago drop out of the gauges
# A code-less order whose refund is at risk: past the time it should have been given up, and
# less than this before the provider expires it (no refund then), or past that.
RISK_WINDOW = timedelta(minutes=5)
MAX_LABEL = 64  # service and country names come from the provider: keep them short

# Prometheus gives every scraped series a ``job`` label of its own (the scrape job): ours is
# ``job_name``, beside ``job_id`` (two runs of one name within SCOPE are two series).
SLOT_LABELS = ["job_name", "job_id", "service", "country"]

Where = tuple[str, str, str, str]  # SLOT_LABELS' values


def _label(text: str | None) -> str:
    return "" if text is None else text[:MAX_LABEL]


def _dollars(micros: int) -> float:
    return float(from_micros(micros))


class MoneyCollector(Collector):
    """Reads the money gauges from the database when Prometheus scrapes."""

    def __init__(
        self, engine: Engine, settings: Settings, now: Callable[[], datetime] = utcnow
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._now = now

    def describe(self) -> Iterator[Metric]:
        yield from _families(Figures())  # names only: registering reads no database

    def collect(self) -> Iterator[Metric]:
        figures = Figures()
        try:
            figures = self.read(self._now())
        except Exception as exc:  # a scrape must still show dramatiq's and the counters
            log.warning("metrics_database_read_failed", error=str(exc))
        yield from _families(figures)

    def read(self, now: datetime) -> Figures:
        """The figures as the database has them at ``now``."""
        s = self._settings
        earliest_risk = timedelta(seconds=s.provider_expiry) - RISK_WINDOW
        with reading(self._engine) as session:
            money = money_figures.read(
                session, finished_since=now - SCOPE, bought_before=now - earliest_risk
            )
            breakers = open_breakers(session, s, now)
            api_key = s.api_key.get_secret_value() if s.api_key is not None else ""
            last = (
                wallet_ledger.last_checkpoint(session, key_fingerprint(api_key))
                if api_key
                else None
            )
        figures = Figures(database_up=True)
        if last is not None:
            figures.unexplained = int(json.loads(last.outcome).get("unexplained_micros", 0))
        for group in money.groups:
            where = _where(group)
            figures.numbers[(*where, group.state.value)] += group.numbers
            figures.spent[where] += group.spent_micros
            figures.refunded[where] += group.refunded_micros
            figures.in_doubt[where] += group.in_doubt_micros
            if group.state is State.RECEIVED:
                figures.codes[where] += group.numbers
            if group.country is not None:
                figures.breakers.setdefault((_label(group.service), _label(group.country)), 0)
        for order in money.old_orders:
            # A waiting order is late only once its own give-up time has passed (a job may
            # wait for its codes until close to the expiry); a cancelling one is late already.
            wait = give_up_after(s, order.code_timeout) if order.state is State.WAITING else 0
            late = max(timedelta(seconds=wait), earliest_risk)
            if now - order.ordered_at >= late:
                figures.at_risk[_where(order)] += order.cost_micros
                figures.at_risk_numbers[_where(order)] += 1
        for breaker in breakers.values():
            key = (_label(breaker.service_name), _label(breaker.country_name))
            figures.breakers[key] = 1
        return figures


class Figures:
    """One scrape's values, by label values; money in micros."""

    def __init__(self, *, database_up: bool = False) -> None:
        self.database_up = database_up
        self.numbers: defaultdict[tuple[str, ...], int] = defaultdict(int)
        self.codes: defaultdict[Where, int] = defaultdict(int)
        self.spent: defaultdict[Where, int] = defaultdict(int)
        self.refunded: defaultdict[Where, int] = defaultdict(int)
        self.in_doubt: defaultdict[Where, int] = defaultdict(int)
        self.at_risk: defaultdict[Where, int] = defaultdict(int)
        self.at_risk_numbers: defaultdict[Where, int] = defaultdict(int)
        self.breakers: dict[tuple[str, str], int] = {}
        self.unexplained: int | None = None  # at the last wallet checkpoint (None: none yet)


def _where(row: money_figures.SlotGroup | money_figures.OldOrder) -> Where:
    return (row.job_name, str(row.job_id), _label(row.service), _label(row.country))


def _families(f: Figures) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "orchestrator_database_up", "1 if this scrape could read the money gauges, else 0."
    )
    up.add_metric([], 1 if f.database_up else 0)
    yield up
    numbers = GaugeMetricFamily(
        "orchestrator_numbers", "Numbers (slots) by state.", labels=[*SLOT_LABELS, "state"]
    )
    for labels, count in sorted(f.numbers.items()):
        numbers.add_metric(list(labels), count)
    yield numbers
    codes = CounterMetricFamily(
        "orchestrator_codes_received", "Codes received.", labels=SLOT_LABELS
    )
    for where, count in sorted(f.codes.items()):
        codes.add_metric(list(where), count)
    yield codes
    for name, help_text, values in (
        ("spend", "Money charged and not refunded (the spend rule of export).", f.spent),
        ("refunds", "Money charged and refunded (cancelled orders).", f.refunded),
        ("in_doubt", "Purchases in doubt, at the budget they hold (their cap).", f.in_doubt),
        (
            "refund_at_risk",
            "Code-less orders past their give-up time and within 5 minutes of the "
            "provider's expiry (or past it): refunds about to be lost.",
            f.at_risk,
        ),
    ):
        family = GaugeMetricFamily(f"orchestrator_{name}_dollars", help_text, labels=SLOT_LABELS)
        for where, micros in sorted(values.items()):
            family.add_metric(list(where), _dollars(micros))
        yield family
    risky = GaugeMetricFamily(
        "orchestrator_refund_at_risk_numbers",
        "How many orders orchestrator_refund_at_risk_dollars counts.",
        labels=SLOT_LABELS,
    )
    for where, count in sorted(f.at_risk_numbers.items()):
        risky.add_metric(list(where), count)
    yield risky
    breakers = GaugeMetricFamily(
        "orchestrator_breaker_open",
        "1 while the circuit breaker of a service and country is open, else 0.",
        labels=["service", "country"],
    )
    for (service, country), is_open in sorted(f.breakers.items()):
        breakers.add_metric([service, country], is_open)
    yield breakers
    unexplained = GaugeMetricFamily(
        "orchestrator_unexplained_spend_dollars",
        "What the wallet's movement up to the last checkpoint left unexplained by the ledger "
        "(orchestrator audit); absent before the first checkpoint.",
    )
    if f.unexplained is not None:
        unexplained.add_metric([], _dollars(f.unexplained))
    yield unexplained
