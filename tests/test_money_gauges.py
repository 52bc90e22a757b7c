"""The money gauges as a scrape reads them from the database: refunds at risk, value in doubt,
the jobs in scope, the circuit breakers, and a database that cannot be read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session

from orchestrator.config import Settings
from orchestrator.db import store, wallet_ledger
from orchestrator.db.engine import make_engine, transaction
from orchestrator.db.models import Activation, Job, JobStatus, State
from orchestrator.jobs.resolve import ResolvedJob, ResolvedTarget
from orchestrator.jobs.submit import job_plan
from orchestrator.lifecycle.gauges import MoneyCollector
from orchestrator.provider.ratelimit import key_fingerprint

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UK = (16, "United Kingdom")
# Defaults: the provider expires an order after 20 minutes; a 10-minute code_timeout.
SETTINGS = Settings(provider_expiry=1200, expiry_margin=90, cancel_min_age=120)

# (state, minutes since it was bought, cost)
Slot = tuple[State, float, str]


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEGITSMS_API_KEY", "LEGITSMS_BASE_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _job(
    engine: Engine,
    name: str,
    slots: Sequence[Slot],
    *,
    code_timeout: float = 600.0,
    finished_hours_ago: float | None = None,
    country: tuple[int, str] = UK,
) -> int:
    """A job whose slots stand as told, written straight into the database."""
    resolved = ResolvedJob(
        name=name,
        budget=None,
        code_timeout=code_timeout,
        schedule=None,
        targets=[
            ResolvedTarget(
                index=0,
                service_id=1003,
                service_name="Telegram",
                countries=[country],
                quantity=len(slots),
                max_price=Decimal("2.00"),
            )
        ],
    )
    with transaction(engine) as session:
        job, ids = store.create_job(session, job_plan(resolved), source="inline")
        assert job.id is not None
        job_id = job.id
    with Session(engine) as session:
        for slot_id, (state, minutes, cost) in zip(ids, slots, strict=True):
            act = session.get(Activation, slot_id)
            assert act is not None
            act.state = state
            act.country_id, act.country_name = country
            act.ordered_at = NOW - timedelta(minutes=minutes)
            act.cost_micros = int(Decimal(cost) * 1_000_000)
            if state is State.IN_DOUBT:
                act.cost_micros, act.reserved_micros = None, act.cap_micros
            if state in (State.RECEIVED, State.CANCELLED, State.EXPIRED):
                act.finished_at = act.ordered_at + timedelta(minutes=1)
                act.cancel_reason = "timeout" if state is State.CANCELLED else None
            session.add(act)
        if finished_hours_ago is not None:
            row = session.get(Job, job_id)
            assert row is not None
            row.status = JobStatus.FINISHED
            row.finished_at = NOW - timedelta(hours=finished_hours_ago)
            session.add(row)
        session.commit()
    return job_id


def _scrape(engine: Engine) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    collector = MoneyCollector(engine, SETTINGS, now=lambda: NOW)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def _value(
    scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return sum(
        value
        for (found, pairs), value in scraped.items()
        if found == name and set(labels.items()) <= pairs
    )


def test_a_refund_is_at_risk_once_the_order_is_late_and_near_its_expiry(engine: Engine) -> None:
    usual = _job(
        engine,
        "usual",
        [
            (State.WAITING, 14, "1.00"),  # given up at 10 minutes, but 6 left before expiry
            (State.WAITING, 16, "1.10"),  # 4 minutes left: at risk
            (State.CANCELLING, 15.5, "1.20"),  # its cancel not through, 4.5 left: at risk
            (State.WAITING, 25, "1.30"),  # past its expiry, not yet read: lost unless read
            (State.RECEIVED, 16, "1.40"),
        ],
    )
    # A job that waits for its codes as long as the provider allows is not late at 16 minutes.
    patient = _job(
        engine,
        "patient",
        [(State.WAITING, 16, "0.50"), (State.WAITING, 19, "0.70")],
        code_timeout=1110,
    )

    scraped = _scrape(engine)

    at_risk = "orchestrator_refund_at_risk_dollars"
    assert _value(scraped, at_risk, job_id=str(usual)) == pytest.approx(3.60)
    assert _value(scraped, "orchestrator_refund_at_risk_numbers", job_id=str(usual)) == 3
    assert _value(scraped, at_risk, job_id=str(patient), job_name="patient") == 0.70
    assert _value(scraped, at_risk, service="Telegram", country="United Kingdom") == 4.30


def test_the_gauges_add_up_each_jobs_money_by_the_spend_rule(engine: Engine) -> None:
    job = str(
        _job(
            engine,
            "money",
            [
                (State.RECEIVED, 5, "1.00"),
                (State.RECEIVED, 5, "1.50"),
                (State.CANCELLED, 12, "0.75"),
                (State.EXPIRED, 30, "0.25"),
                (State.WAITING, 1, "0.60"),
                (State.IN_DOUBT, 1, "0"),
                (State.PLANNED, 0, "0"),
            ],
        )
    )

    scraped = _scrape(engine)

    assert _value(scraped, "orchestrator_numbers", job_id=job) == 7
    assert _value(scraped, "orchestrator_numbers", job_id=job, state="received") == 2
    assert _value(scraped, "orchestrator_codes_received_total", job_id=job) == 2
    # Charged and not refunded: received, expired and waiting; a cancelled one came back.
    assert _value(scraped, "orchestrator_spend_dollars", job_id=job) == pytest.approx(3.35)
    assert _value(scraped, "orchestrator_refunds_dollars", job_id=job) == 0.75
    assert _value(scraped, "orchestrator_in_doubt_dollars", job_id=job) == 2.00, "at its cap"
    assert _value(scraped, "orchestrator_database_up") == 1


def test_jobs_finished_over_a_day_ago_drop_out(engine: Engine) -> None:
    old = _job(engine, "nightly", [(State.RECEIVED, 5, "1.00")], finished_hours_ago=25)
    recent = _job(engine, "nightly", [(State.RECEIVED, 5, "2.00")], finished_hours_ago=23)
    active = _job(engine, "nightly", [(State.WAITING, 1, "3.00")])

    scraped = _scrape(engine)

    shown = {dict(pairs)["job_id"] for name, pairs in scraped if name == "orchestrator_numbers"}
    assert shown == {str(recent), str(active)}
    assert str(old) not in shown
    assert _value(scraped, "orchestrator_spend_dollars", job_name="nightly") == 5.00


def test_the_breaker_of_a_service_and_country_reads_1_while_open(engine: Engine) -> None:
    _job(engine, "misses", [(State.CANCELLED, 10 - i, "1.00") for i in range(5)])
    _job(engine, "codes", [(State.RECEIVED, 3, "1.00")], country=(1, "United States"))

    scraped = _scrape(engine)

    breaker = "orchestrator_breaker_open"
    assert _value(scraped, breaker, service="Telegram", country="United Kingdom") == 1
    assert (breaker, frozenset({("service", "Telegram"), ("country", "United States")})) in (
        scraped
    )
    assert _value(scraped, breaker, country="United States") == 0


def test_a_scrape_survives_a_database_that_cannot_be_read(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables
    try:
        scraped = _scrape(engine)
    finally:
        engine.dispose()
    assert scraped == {("orchestrator_database_up", frozenset()): 0}


def test_the_unexplained_spend_of_the_last_checkpoint_is_a_gauge(engine: Engine) -> None:
    settings = SETTINGS.model_copy(update={"api_key": SecretStr("sk_gauge")})
    collector = MoneyCollector(engine, settings, now=lambda: NOW)
    assert collector.read(NOW).unexplained is None, "no checkpoint yet: no figure"
    with transaction(engine) as session:
        for at, unexplained in ((NOW - timedelta(hours=1), 0), (NOW, 1_550_000)):
            wallet_ledger.add_checkpoint(
                session,
                key=key_fingerprint("sk_gauge"),
                at=at,
                reason="audit",
                balance_micros=10_000_000,
                ledger=wallet_ledger.totals(session),
                outcome={"unexplained_micros": unexplained},
                settling_stopped=False,
            )
    samples = [
        sample
        for family in collector.collect()
        for sample in family.samples
        if sample.name == "orchestrator_unexplained_spend_dollars"
    ]
    assert [(s.labels, s.value) for s in samples] == [({}, 1.55)], "the last checkpoint's"
