"""A job file to a CSV on real parts: a worker subprocess, Redis, the database, the simulator."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, fast_env, submitted_job_id, write_job
from workers import NAMESPACE

pytestmark = pytest.mark.slow

TWO_TARGETS = """\
name: e2e
budget: 100.00
code_timeout: 5s
targets:
  - service: Telegram
    country: United Kingdom
    quantity: 12
    max_price: 2.00
  - service: 924
    countries: [16, 1]
    quantity: 10
    max_price: 0.50
"""


def test_a_job_ends_with_a_csv_that_matches_the_providers_ledger(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path, TWO_TARGETS)
    submitted = orchestrator.run("submit", str(job_file))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted_job_id(submitted.stdout)
    orchestrator.start_worker()

    progress = orchestrator.wait_for_job(job_id, timeout=90)
    rows = orchestrator.export(job_id)
    ledger = {o["order_id"]: o for o in _ledger_now(sandbox)}

    assert len(rows) == 22
    assert {r["order_id"] for r in rows if r["order_id"]} == set(ledger), (
        "every order is in the CSV"
    )
    received = [r for r in rows if r["status"] == "received"]
    assert received, "some codes arrived"
    assert any(r["status"] == "cancelled" for r in rows), "some codes never came"
    for row in rows:
        order = ledger[row["order_id"]]
        assert row["phone"] == order["phone"]
        assert Decimal(row["cost"]) == Decimal(order["cost"])
        if row["status"] == "received":
            assert row["code"] == order["code"]
        else:
            assert row["status"] == "cancelled", row
            assert order["state"] == "cancelled" and order["refunded"], order
    assert progress.exit_code() is ExitCode.INCOMPLETE  # done, and not every number got a code
    spent = sum(Decimal(o["cost"]) for o in ledger.values() if not o["refunded"])
    assert progress.spend == spent


def _ledger_now(sandbox: SandboxServer) -> list[dict[str, str]]:
    orders: list[dict[str, str]] = sandbox.ledger.snapshot(time.time())["orders"]
    return orders


@pytest.mark.postgres
def test_two_hosts_sharing_redis_and_postgres_complete_one_job_with_nothing_done_twice(
    tmp_path: Path, sandbox: SandboxServer, redis_url: str, postgres_url: str
) -> None:
    # Each "host" has its own working and data folder; only Redis and PostgreSQL are shared.
    # A shared limit of 8 requests a second spreads the job over a few seconds, and a worker
    # takes from the queue only what its threads can start: with one thread a host holds one
    # of the job's five purchase messages at a time and cannot keep up with the limit alone,
    # so the other host finds work. (With two threads, one host could: a worker that holds
    # delayed messages wakes when they fall due, workers/prompt_delays.py, and an idle one
    # backs off up to a second, so the busy host took all 22 numbers in one CI run of four.)
    hosts = [
        Orchestrator(
            workdir=_folder(tmp_path / f"host{i}"),
            env=fast_env(sandbox.url, redis_url, postgres_url, tmp_path / f"host{i}")
            | {"ORCHESTRATOR_RATE_LIMIT": "8"},
        )
        for i in (1, 2)
    ]
    try:
        # Both workers wait on the queue before the job arrives, as long-lived services do.
        for host in hosts:
            host.start_worker(threads=1)
        for host in hosts:
            _wait_for_log(host.workdir, '"worker_started"', timeout=30)
        # ...and consume: each worker's broker beats in Redis once its consumers fetch. Without
        # this, on a busy machine one host could take the whole job before the other listened.
        _wait_for_consumers(redis_url, 2, timeout=30)
        submitted = hosts[0].run("submit", str(write_job(tmp_path, TWO_TARGETS)))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted_job_id(submitted.stdout)

        progress = hosts[1].wait_for_job(job_id, timeout=90)
        rows = hosts[1].export(job_id)
    finally:
        for host in hosts:
            host.stop_all()

    ledger = _ledger_now(sandbox)
    assert len(ledger) == len({o["order_id"] for o in ledger}) <= 22
    assert sorted(r["order_id"] for r in rows if r["order_id"]) == sorted(
        o["order_id"] for o in ledger
    )
    assert all(o["state"] in {"received", "cancelled"} for o in ledger)
    worked = [_orders_placed(host.workdir) for host in hosts]
    assert all(n > 0 for n in worked), f"both hosts bought numbers: {worked}"
    assert sum(worked) == len(ledger), "no purchase was made twice"
    assert progress.ended == 22


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wait_for_log(workdir: Path, text: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(text in log.read_text() for log in workdir.glob("worker-*.log")):
        assert time.monotonic() < deadline, f"no {text} in {workdir}'s worker logs"
        time.sleep(0.1)


def _wait_for_consumers(redis_url: str, count: int, *, timeout: float) -> None:
    beats = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    while beats.zcard(f"{NAMESPACE}:__heartbeats__") < count:
        assert time.monotonic() < deadline, f"fewer than {count} workers consuming"
        time.sleep(0.1)
    beats.close()


def _orders_placed(workdir: Path) -> int:
    return sum(log.read_text().count('"order_placed"') for log in workdir.glob("worker-*.log"))
