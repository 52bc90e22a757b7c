"""Wallet guards, end to end: real workers over HTTP against the simulator. An empty wallet
pauses buying on the key (one ``insufficient_funds`` per pause, not one per slot), and a
``min_balance`` floor is never bought through."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from orchestrator.cli.watch import read_progress
from orchestrator.db.models import JobStatus, State
from orchestrator.sandbox.config import SandboxConfig, SandboxOffer, SandboxService
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, fast_env, submitted_job_id, wait_until, write_job

pytestmark = pytest.mark.slow

SERVICE = 2000
COUNTRY = 43  # Germany in the default table
PAUSE = 3.0  # seconds: funds_pause in these tests


def _provider(balance: str) -> SandboxConfig:
    offer = SandboxOffer(Decimal("1.00"), 500, 100)  # every number gets its code: no refunds
    return SandboxConfig(
        seed=3,
        balance=Decimal(balance),
        services=(SandboxService(SERVICE, "Signup", {COUNTRY: offer}),),
        code_delay=(0.2, 0.8),
        cancel_min_age=1.0,
        expiry=30.0,
    )


@pytest.fixture
def wallet(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, sqlite_url: str
) -> Iterator[tuple[Orchestrator, SandboxServer]]:
    balance, extra = request.param
    with SandboxServer(_provider(balance)) as server:
        env = fast_env(server.url, redis_url, sqlite_url, tmp_path)
        # Orders a quarter second apart: each answer is in before the next order is sent.
        env |= {"ORCHESTRATOR_RATE_LIMIT": "4", "ORCHESTRATOR_FUNDS_PAUSE": f"{PAUSE:g}s", **extra}
        orch = Orchestrator(workdir=tmp_path, env=env)
        try:
            yield orch, server
        finally:
            orch.stop_all()


def _submit(orch: Orchestrator, numbers: int) -> int:
    body = (
        "name: wallet\ncode_timeout: 10s\ntargets:\n  - service: Signup\n    country: Germany\n"
        f"    quantity: {numbers}\n    max_price: 1\n"
    )
    submitted = orch.run("submit", str(write_job(orch.workdir, body)))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted_job_id(submitted.stdout)
    orch.start_worker()
    return job_id


def _status(orch: Orchestrator, job_id: int) -> str:
    shown = orch.run("status", str(job_id), COLUMNS="200")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def _refused_orders(server: SandboxServer) -> list[float]:
    return [
        at
        for at, endpoint, status in server.ledger.requests()
        if endpoint == "POST /order" and status == 402
    ]


def _cancel(orch: Orchestrator, job_id: int) -> None:
    cancelled = orch.run("cancel", str(job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    progress = orch.wait_for_job(job_id, timeout=PAUSE + 15)
    assert progress.status is not JobStatus.ACTIVE


@pytest.mark.parametrize("wallet", [("3.00", {})], indirect=True)
def test_an_empty_wallet_pauses_buying_on_the_key_instead_of_failing_each_slot(
    wallet: tuple[Orchestrator, SandboxServer],
) -> None:
    orch, server = wallet
    job_id = _submit(orch, 8)
    paused = "buying paused: insufficient funds on the key until "
    wait_until(lambda: paused in _status(orch, job_id), "status saying buying is paused")
    started = time.monotonic()
    # Two pause windows more: each may spend one order to learn the wallet is still empty.
    time.sleep(2 * PAUSE + 1)
    progress = read_progress(orch.engine, job_id)
    assert progress.status is JobStatus.ACTIVE, "its slots wait for money"
    assert progress.counts[State.FAILED] == 0, "the slot that met the 402 went back to planned"
    _cancel(orch, job_id)
    elapsed = time.monotonic() - started

    orders = server.ledger.snapshot(time.time())["orders"]
    assert len(orders) == 3, "the wallet paid for three numbers"
    refused = _refused_orders(server)
    assert 1 <= len(refused) <= 2 + elapsed / PAUSE
    gaps = [later - earlier for earlier, later in itertools.pairwise(refused)]
    assert all(gap >= PAUSE - 0.5 for gap in gaps), f"one 402 per pause window: {gaps}"


@pytest.mark.parametrize("wallet", [("10.00", {"ORCHESTRATOR_MIN_BALANCE": "7.00"})], indirect=True)
def test_min_balance_is_never_bought_through(wallet: tuple[Orchestrator, SandboxServer]) -> None:
    orch, server = wallet
    job_id = _submit(orch, 6)
    paused = "buying paused: the balance would fall under min_balance until "
    wait_until(lambda: paused in _status(orch, job_id), "status saying buying is paused")
    time.sleep(PAUSE + 1)  # a pause ended: the floor still holds
    _cancel(orch, job_id)

    orders = server.ledger.snapshot(time.time())["orders"]
    assert len(orders) <= 3, "10.00 less 3 numbers at 1.00 is the 7.00 floor"
    assert server.ledger.balance() >= Decimal("7.00")
    assert not _refused_orders(server)
