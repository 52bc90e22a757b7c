"""The embedded Valkey lives as long as any process of its data folder uses it, and comes back
if it dies under a ``run``."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.sandbox.config import DEMO_API_KEY, SandboxConfig
from orchestrator.sandbox.server import SandboxServer
from tests.running import Run, alive, ledger, valkey_pids
from tests.support import Orchestrator, fast_env, write_job

pytestmark = pytest.mark.slow

JOB = """\
name: {name}
code_timeout: {timeout}
targets:
  - service: Telegram
    country: United Kingdom
    quantity: {quantity}
    max_price: 2.00
"""
ENDED = (0, 1)  # every number got its code, or some were cancelled
SLOW_KEY = "sk_test_slow"  # a second account, with a rate limit of its own


@pytest.fixture
def provider() -> Iterator[SandboxServer]:
    config = SandboxConfig(
        seed=3,
        api_keys=(DEMO_API_KEY, SLOW_KEY),
        code_delay=(0.5, 3.0),
        never_ratio=0.5,
        cancel_min_age=2.0,
        expiry=60.0,
    )
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def orch(provider: SandboxServer, tmp_path: Path) -> Iterator[Orchestrator]:
    """REDIS_URL unset: every command shares the data folder's embedded Valkey."""
    env = fast_env(provider.url, "", f"sqlite:///{tmp_path / 'orch.db'}", tmp_path)
    del env["REDIS_URL"]
    env["ORCHESTRATOR_PROVIDER_EXPIRY"] = "60s"
    orch = Orchestrator(workdir=tmp_path, env=env)
    yield orch
    orch.stop_all()


def _job(tmp_path: Path, name: str, *, quantity: int, timeout: str) -> str:
    body = JOB.format(name=name, quantity=quantity, timeout=timeout)
    return str(write_job(tmp_path, body, f"{name}.yaml"))


def _unfinished(sandbox: SandboxServer) -> list[dict[str, object]]:
    return [o for o in ledger(sandbox) if o["state"] not in ("received", "cancelled")]


def test_a_run_that_ends_first_leaves_the_broker_to_the_run_still_using_it(
    orch: Orchestrator, provider: SandboxServer, tmp_path: Path
) -> None:
    first = Run.start(orch, _job(tmp_path, "short", quantity=2, timeout="3s"), name="first")
    second = None
    try:
        first.wait_until(lambda: bool(valkey_pids(first)), "embedded broker started")
        first.wait_until(lambda: len(ledger(provider)) >= 2, "first job bought")
        second = Run.start(orch, _job(tmp_path, "long", quantity=4, timeout="12s"), name="second")
        second.wait_until(lambda: len(ledger(provider)) >= 6, "second job bought")
        assert first.wait(timeout=40) in ENDED, first.err()
        [valkey] = valkey_pids(first)
        assert alive(valkey, first.seen[valkey]), "the broker outlives the run that started it"
        assert second.wait(timeout=40) in ENDED, second.err()
    finally:
        first.kill()
        if second is not None:
            second.kill()

    assert "4/4 ended" in second.out()
    assert not _unfinished(provider)
    assert not first.left_behind(), "the last user stopped the broker"
    assert not second.left_behind()


def test_the_brokers_owner_losing_the_overlap_check_leaves_it_to_the_run_that_won(
    orch: Orchestrator, provider: SandboxServer, tmp_path: Path
) -> None:
    job = _job(tmp_path, "nightly", quantity=3, timeout="25s")
    # The broker's owner resolves its job slowly (another account with a tight rate limit), so
    # the run started just after it submits first, as cron's second run of one job may. The
    # owner's three reads take about 14 s at 0.15 requests/s; the winner's job must still be
    # active then (its code-less order is cancelled at the timeout): at 12 s it ended first in
    # one CI run of four, once workers acted on delayed messages when due.
    slow = {"LEGITSMS_API_KEY": SLOW_KEY, "ORCHESTRATOR_RATE_LIMIT": "0.15"}
    owner = Run.start(orch, job, name="owner", **slow)
    winner = None
    try:
        owner.wait_until(lambda: bool(valkey_pids(owner)), "embedded broker started")
        winner = Run.start(orch, job, name="winner")
        assert owner.wait(timeout=40) == 4, owner.err()
        assert "is still active" in owner.err()
        [valkey] = valkey_pids(owner)
        assert alive(valkey, owner.seen[valkey]), "the broker outlives its owner's exit 4"
        assert winner.wait(timeout=40) in ENDED, winner.err()
    finally:
        owner.kill()
        if winner is not None:
            winner.kill()

    assert "3/3 ended" in winner.out()
    assert not _unfinished(provider)
    assert not owner.left_behind() and not winner.left_behind()


def test_a_run_whose_broker_dies_restarts_it_and_finishes_the_job(
    orch: Orchestrator, provider: SandboxServer, tmp_path: Path
) -> None:
    run = Run.start(orch, _job(tmp_path, "phoenix", quantity=4, timeout="5s"))
    try:
        run.wait_until(lambda: len(ledger(provider)) >= 4, "orders bought")
        [valkey] = valkey_pids(run)
        os.kill(valkey, signal.SIGKILL)
        exit_code = run.wait(timeout=45)
    finally:
        run.kill()

    stderr = run.err()
    assert exit_code in ENDED, stderr
    assert "restarted" in stderr
    assert "4/4 ended" in run.out()
    assert not _unfinished(provider)
    assert not run.left_behind()
