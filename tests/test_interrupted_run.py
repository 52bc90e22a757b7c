"""An interrupted ``run`` finishes what it bought before it leaves, and leaves nothing running."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.db.models import State
from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.server import SandboxServer
from tests.running import Run, ledger, read_csv, valkey_pids
from tests.support import Orchestrator, fast_env, write_job

pytestmark = pytest.mark.slow

# Codes never come in time on their own (code_timeout is clamped to expiry - margin = 50 s),
# so a run that ends within seconds of the signal did cancel what had no code.
JOB = """\
name: interrupted
code_timeout: 10m
targets:
  - service: Telegram
    country: United Kingdom
    quantity: 6
    max_price: 2.00
"""
MIN_AGE = 3.0


def _settings(sandbox: SandboxServer, redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = fast_env(sandbox.url, redis_url, f"sqlite:///{tmp_path / 'orch.db'}", tmp_path)
    env["ORCHESTRATOR_CANCEL_MIN_AGE"] = f"{MIN_AGE}s"
    env["ORCHESTRATOR_PROVIDER_EXPIRY"] = "60s"
    return env


@pytest.fixture
def provider() -> Iterator[SandboxServer]:
    """Half the codes come in 1-4 s, half never; a cancel is allowed at 3 s, expiry at 60 s."""
    config = SandboxConfig(
        seed=7, code_delay=(1.0, 4.0), never_ratio=0.5, cancel_min_age=MIN_AGE, expiry=60.0
    )
    with SandboxServer(config) as server:
        yield server


@pytest.fixture
def embedded(provider: SandboxServer, tmp_path: Path) -> Iterator[Orchestrator]:
    """The one-machine defaults: REDIS_URL unset, so ``run`` starts the embedded Valkey."""
    env = _settings(provider, "", tmp_path)
    del env["REDIS_URL"]
    orch = Orchestrator(workdir=tmp_path, env=env)
    yield orch
    orch.stop_all()


def _bought(sandbox: SandboxServer, count: int) -> bool:
    return len(ledger(sandbox)) >= count


@pytest.mark.parametrize(
    ("send", "code"),
    [("interrupt", 130), ("terminate", 143)],
    ids=["ctrl-c", "sigterm"],
)
def test_an_interrupted_run_finishes_its_bought_orders_exports_and_leaves_nothing_running(
    embedded: Orchestrator, provider: SandboxServer, tmp_path: Path, send: str, code: int
) -> None:
    job = write_job(tmp_path, JOB)
    run = Run.start(embedded, str(job), "--export", "out/{name}.csv")
    try:
        run.wait_until(lambda: _bought(provider, 6), "six orders bought")
        assert valkey_pids(run), f"the run started the embedded broker: {run.seen}"
        getattr(run, send)()
        exit_code = run.wait(timeout=40)
    finally:
        run.kill()

    stderr = run.err()
    assert exit_code == code, stderr
    unfinished = [o for o in ledger(provider) if o["state"] not in ("received", "cancelled")]
    assert not unfinished, f"orders left to expire unrefunded: {unfinished}\n{stderr}"
    assert all(o["refunded"] for o in ledger(provider) if o["state"] == "cancelled")
    rows = read_csv(tmp_path / "out" / "interrupted.csv")
    ordered = sorted(str(o["order_id"]) for o in ledger(provider))
    assert sorted(r["order_id"] for r in rows) == ordered
    assert {r["status"] for r in rows} <= {"received", "cancelled"}
    assert "6/6 ended" in run.out()
    assert not run.left_behind(), "no worker or valkey-server outlives the run"
    assert "interrupted: no more purchases; finishing 6 bought orders" in stderr


def test_a_second_ctrl_c_leaves_at_once_and_says_which_orders_are_left_and_how_to_finish_them(
    redis_url: str, tmp_path: Path
) -> None:
    # No code ever comes, and cancels are not allowed yet when we leave: all six are left.
    config = SandboxConfig(seed=7, never_ratio=1.0, cancel_min_age=15.0, expiry=60.0)
    with SandboxServer(config) as provider:
        _leave_at_the_second_ctrl_c(provider, redis_url, tmp_path)


def _leave_at_the_second_ctrl_c(provider: SandboxServer, redis_url: str, tmp_path: Path) -> None:
    env = _settings(provider, redis_url, tmp_path)
    env["ORCHESTRATOR_CANCEL_MIN_AGE"] = "15s"
    orch = Orchestrator(workdir=tmp_path, env=env)
    job = write_job(tmp_path, JOB)
    run = Run.start(orch, str(job))
    try:
        run.wait_until(lambda: _bought(provider, 6), "six orders bought")
        run.interrupt()
        run.wait_until(lambda: "again to leave now" in run.err(), "word that it is finishing")
        run.interrupt()
        exit_code = run.wait(timeout=15)
    finally:
        run.kill()

    stderr = run.err()
    assert exit_code == ExitCode.INTERRUPTED, stderr
    for order in ledger(provider):
        assert order["state"] == "waiting"
        assert str(order["order_id"]) in stderr, f"order {order['order_id']} is named\n{stderr}"
    assert re.search(r"expires \d\d:\d\d:\d\d UTC", stderr), stderr
    assert "orchestrator worker" in stderr
    assert not run.left_behind(), "the workers are stopped"

    # The command it names does finish them: the job is cancelled, any worker cancels them.
    orch.start_worker()
    try:
        orch.wait_for_job(1, timeout=60)
    finally:
        orch.stop_all()
    assert all(o["state"] == "cancelled" and o["refunded"] for o in ledger(provider))


def test_a_signal_to_a_run_without_local_workers_leaves_the_job_to_the_workers_elsewhere(
    provider: SandboxServer, redis_url: str, tmp_path: Path
) -> None:
    orch = Orchestrator(workdir=tmp_path, env=_settings(provider, redis_url, tmp_path))
    job = write_job(tmp_path, JOB.replace("10m", "5s"))
    orch.start_worker()
    run = Run.start(orch, str(job), "--workers", "0")
    try:
        run.wait_until(lambda: _bought(provider, 1), "an order bought")
        run.terminate()
        exit_code = run.wait(timeout=15)
        stderr = run.err()
        assert exit_code == 143, stderr
        assert "job 1 goes on with the workers elsewhere" in stderr
        final = orch.wait_for_job(1, timeout=60)  # the worker finishes it
    finally:
        run.kill()
        orch.stop_all()
    assert final.total == 6 and final.counts[State.FAILED] == 0, "the job was not cancelled"
    assert all(o["state"] in ("received", "cancelled") for o in ledger(provider))
