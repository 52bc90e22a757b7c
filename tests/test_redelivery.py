"""Messages delivered twice, early, late, out of order or never leave the books as one delivery."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from orchestrator.cli.watch import read_progress
from orchestrator.db.models import Activation, Job, JobStatus
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.sandbox.config import SandboxConfig
from tests.inprocess import inprocess_runtime, plan_job, run_broker

SLOTS = 4
PROVIDER = SandboxConfig(
    seed=3, code_delay=(3.0, 3.0), never_ratio=0.5, cancel_min_age=5, expiry=60
)
HORIZON = 600.0  # fake seconds; a job here ends in about 30

# One perturbation of the broker: at the k-th delivery, also deliver (action, slot) now,
# or lose the k-th message altogether.
extra = st.tuples(st.integers(0, 60), st.sampled_from(list(Action)), st.integers(0, SLOTS - 1))
lost = st.integers(0, 60)


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEGITSMS_API_KEY", "LEGITSMS_BASE_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def outcome(rt: Runtime, simulator: object) -> tuple[Counter[str], int, int, bool]:
    """What a user would compare: slot fates, orders at the provider, refunds, job ended."""
    with Session(rt.engine) as session:
        rows = session.exec(select(Activation)).all()
        job = session.exec(select(Job)).one()
    ledger = simulator.ledger  # type: ignore[attr-defined]
    orders = ledger.orders()
    assert len({r.order_id for r in rows if r.order_id}) == len([r for r in rows if r.order_id])
    assert job.reserved_micros == sum(r.reserved_micros for r in rows)
    fates = Counter(r.state.value for r in rows)
    refunded = sum(1 for o in orders if o.refunded)
    return fates, len(orders), refunded, job.status is not JobStatus.ACTIVE


def simulate(
    extras: list[tuple[int, Action, int]], losses: set[int]
) -> tuple[Counter[str], int, int, bool]:
    with (
        TemporaryDirectory() as folder,
        inprocess_runtime(Path(folder), PROVIDER) as (rt, sim, clock),
    ):
        slots = plan_job(rt.engine, quantity=SLOTS)
        extra_ids = [(k, action, slots[slot]) for k, action, slot in extras]
        first = [Nudge(Action.PLACE, slot) for slot in slots]
        run_broker(rt, clock, first, horizon=HORIZON, extras=extra_ids, losses=losses)
        job_id = 1
        assert read_progress(rt.engine, job_id).total == SLOTS
        return outcome(rt, sim)


BASELINE = simulate([], set())


def test_the_baseline_buys_each_slot_once_and_ends_every_order() -> None:
    fates, orders, refunded, ended = BASELINE
    assert ended
    assert orders == SLOTS
    assert fates["received"] + fates["cancelled"] == SLOTS
    assert fates["cancelled"] == refunded > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extras=st.lists(extra, max_size=12), losses=st.sets(lost, max_size=6))
def test_any_redelivery_or_loss_leaves_the_books_as_one_delivery(
    extras: list[tuple[int, Action, int]], losses: set[int]
) -> None:
    assert simulate(extras, losses) == BASELINE
