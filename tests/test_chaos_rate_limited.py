"""Chaos under a binding rate limit: the simulator enforces the limit, the workers keep to it.

Two jobs side by side; the first is cancelled mid-run while codes arrive around the cancel
time; workers are SIGKILLed throughout. The simulator's ledger judges: every code it
delivered is exported ``received`` with that code, every order ends, the second job ends
within SECOND_JOB_BOUND seconds of its submission, and no order meets many refused cancels.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from orchestrator.db.models import Activation, Event, Job, JobStatus, State
from orchestrator.sandbox.config import DEMO_API_KEY, SandboxConfig
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, settled_ledger, submitted_job_id, write_job

pytestmark = [pytest.mark.slow, pytest.mark.serial]

RATE = 4.0  # requests per second: the provider's 0.5, scaled so a run takes a minute
FIRST = """\
name: first
code_timeout: 4s
targets:
  - service: Telegram
    country: 16
    quantity: 24
    max_price: 2.00
"""
SECOND = """\
name: second
code_timeout: 4s
targets:
  - service: Tiktok/Douyin
    countries: [16, 1]
    quantity: 8
    max_price: 0.50
"""
PROVIDER = SandboxConfig(
    seed=8,
    balance=Decimal("10000"),
    code_delay=(2.0, 7.0),  # around the cancel time (4 s): many codes race their cancel
    never_ratio=0.2,
    cancel_min_age=3.0,
    expiry=30.0,
    rate_limit=RATE,
)
SECOND_JOB_BOUND = 90.0  # seconds from submission: its orders' timeout, a cancel, and the kills
MAX_REFUSALS = 2  # refused cancels per order: a code that raced it, or a provider lock


def test_cancel_and_kills_under_a_binding_limit_lose_no_code_and_starve_no_job(
    tmp_path: Path, redis_url: str, sqlite_url: str
) -> None:
    rng = random.Random(10)
    with SandboxServer(PROVIDER) as sandbox:
        orch = Orchestrator(workdir=tmp_path, env=_env(sandbox, redis_url, sqlite_url))
        try:
            first = _submit(orch, write_job(tmp_path, FIRST, "first.yaml"))
            workers = [orch.start_worker(threads=4), orch.start_worker(threads=4)]
            _kill_and_restart(orch, workers, rng, seconds=5)
            second_at = time.monotonic()
            second = _submit(orch, write_job(tmp_path, SECOND, "second.yaml"))
            _kill_and_restart(orch, workers, rng, seconds=3)
            cancelled = orch.run("cancel", str(first))
            assert cancelled.returncode == 0, cancelled.stderr
            _kill_and_restart(orch, workers, rng, seconds=12)

            orch.wait_for_job(second, timeout=SECOND_JOB_BOUND - (time.monotonic() - second_at))
            second_took = time.monotonic() - second_at
            orch.wait_for_job(first, timeout=120)
        finally:
            orch.stop_all()
        exported = {**_by_order(orch.export(first)), **_by_order(orch.export(second))}
        ledger = settled_ledger(sandbox)
        rate_limited = sandbox.ledger.snapshot(time.time())["rate_limited"]
        with Session(orch.engine) as session:
            slots = list(session.exec(select(Activation)).all())
            refusals = Counter(
                e.activation_id
                for e in session.exec(select(Event).where(col(Event.kind) == "cancel_refused"))
            )

    assert second_took < SECOND_JOB_BOUND
    in_doubt = [s for s in slots if s.state is State.IN_DOUBT and not s.order_id]
    unaccounted = [o for o in ledger if o["order_id"] not in exported]
    assert len(unaccounted) <= len(in_doubt), "an order we lost track of has an in_doubt slot"
    assert all(o["state"] != "waiting" for o in ledger), "every order ended at the provider"
    for order in ledger:
        row = exported.get(order["order_id"])
        if row is None:
            continue
        if order["code"] is not None and order["state"] == "received":
            assert row["status"] == "received" and row["code"] == order["code"], (row, order)
        else:
            assert order["state"] == "cancelled" and order["refunded"], (row, order)
            assert row["status"] == "cancelled", (row, order)
    assert max(refusals.values(), default=0) <= MAX_REFUSALS, refusals
    assert Counter(s.job_id for s in slots if s.state is State.FAILED)[first] > 0, (
        "the cancel stopped the first job's buying"
    )
    with Session(orch.engine) as session:
        assert all(job.status is not JobStatus.ACTIVE for job in session.exec(select(Job)))
    # The limiter keeps to the provider's limit; a killed worker's booked slot is the most a
    # restart can cost, so 429s stay rare.
    assert rate_limited <= 3, rate_limited


def _submit(orch: Orchestrator, path: Path) -> int:
    result = orch.run("submit", str(path))
    assert result.returncode == 0, result.stderr
    return submitted_job_id(result.stdout)


def _kill_and_restart(
    orch: Orchestrator, workers: list[Any], rng: random.Random, *, seconds: float
) -> None:
    """For ``seconds``, SIGKILL one worker every 1.5-3 s and start it again at once."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, rng.uniform(1.5, 3.0)))
        victim = rng.randrange(len(workers))
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        workers[victim] = orch.start_worker(threads=4)


def _by_order(rows: list[dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["order_id"]: row for row in rows if row["order_id"]}


def _env(sandbox: SandboxServer, redis_url: str, database_url: str) -> dict[str, str]:
    return {
        "LEGITSMS_BASE_URL": sandbox.url,
        "LEGITSMS_API_KEY": DEMO_API_KEY,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "ORCHESTRATOR_RATE_LIMIT": str(RATE),
        "ORCHESTRATOR_POLL_INTERVAL": "1s",
        "ORCHESTRATOR_CANCEL_MIN_AGE": "3s",
        "ORCHESTRATOR_PROVIDER_EXPIRY": "30s",
        "ORCHESTRATOR_EXPIRY_MARGIN": "8s",
        "ORCHESTRATOR_SWEEP_INTERVAL": "3s",
        "ORCHESTRATOR_READ_TIMEOUT": "2s",
        "ORCHESTRATOR_CONNECT_TIMEOUT": "1s",
        "ORCHESTRATOR_CLAIM_LEASE": "5s",
    }
