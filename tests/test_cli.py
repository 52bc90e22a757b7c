"""The CLI as a user and cron see it: run, overlap refusal, status, export, cancel."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.watch import read_progress
from orchestrator.db.models import JobStatus
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, submitted_job_id, wait_until, write_job

pytestmark = pytest.mark.slow

SMALL = """\
name: small
code_timeout: 3s
targets:
  - service: Telegram
    country: 16
    quantity: 4
    max_price: 2.00
"""


def test_run_works_the_job_with_its_own_workers_and_writes_the_csv(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job = write_job(tmp_path, SMALL)
    result = orchestrator.run("run", str(job), "--export", "out/small.csv", timeout=120)

    assert result.returncode in (ExitCode.OK, ExitCode.INCOMPLETE), result.stderr
    with (tmp_path / "out" / "small.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert {r["status"] for r in rows} <= {"received", "cancelled"}
    expected = ExitCode.OK if all(r["status"] == "received" for r in rows) else ExitCode.INCOMPLETE
    assert result.returncode == expected
    assert "4/4 ended" in result.stdout
    orders = sandbox.ledger.snapshot(time.time())["orders"]
    assert sorted(r["order_id"] for r in rows) == sorted(o["order_id"] for o in orders)


def test_a_second_run_of_a_job_still_active_is_refused_with_its_own_exit_code(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job = write_job(tmp_path, SMALL)
    first = orchestrator.run("submit", str(job))
    assert first.returncode == 0, first.stderr

    second = orchestrator.run("run", str(job), "--workers", "0")

    assert second.returncode == ExitCode.OVERLAP
    assert "is still active" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    overlap = orchestrator.run("submit", str(job), "--allow-overlap")
    assert overlap.returncode == 0, overlap.stderr
    assert submitted_job_id(overlap.stdout) == submitted_job_id(first.stdout) + 1


def test_cancel_stops_buying_and_refunds_what_was_bought(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    long_wait = SMALL.replace("code_timeout: 3s", "code_timeout: 10m").replace(": 4", ": 12")
    job_id = submitted_job_id(
        orchestrator.run("submit", str(write_job(tmp_path, long_wait))).stdout
    )
    orchestrator.start_worker()
    wait_until(lambda: len(sandbox.ledger.orders()) == 12, "all 12 numbers bought", timeout=90)
    time.sleep(3.5)  # every code that will come has come; the rest wait for the 10m timeout

    cancelled = orchestrator.run("cancel", str(job_id))
    assert cancelled.returncode == 0, cancelled.stderr
    progress = orchestrator.wait_for_job(job_id, timeout=60)

    assert progress.status is JobStatus.CANCELLED
    orders = sandbox.ledger.snapshot(time.time())["orders"]
    assert len(orders) == 12
    assert any(o["refunded"] for o in orders), "the code-less orders were refunded"
    assert all(o["refunded"] or o["state"] == "received" for o in orders)
    status = orchestrator.run("status", str(job_id))
    assert status.returncode == 0
    assert "cancel" in status.stdout
    assert read_progress(orchestrator.engine, job_id).total == 12
