"""A real worker's log lines about a number name its job, target, service, country and order;
the CSV's ``spent`` column adds up to what the provider's ledger kept."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import structlog

from orchestrator.db.models import Activation, Job, Target
from orchestrator.lifecycle.slot_log import about
from orchestrator.sandbox.server import SandboxServer
from tests.conftest import FAST_PROVIDER
from tests.support import Orchestrator, submitted_job_id, write_job

SMALL = """\
name: logged
code_timeout: 4s
targets:
  - service: Telegram
    country: United Kingdom
    quantity: 3
    max_price: 2.00
  - service: 924
    country: 16
    quantity: 3
    max_price: 0.50
"""


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """The fast simulator, with half the codes never coming: some numbers are refunded."""
    with SandboxServer(replace(FAST_PROVIDER, never_ratio=0.5)) as server:
        yield server


def _run_small_job(orch: Orchestrator, tmp_path: Path) -> tuple[int, Path]:
    submitted = orch.run("submit", str(write_job(tmp_path, SMALL)))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted_job_id(submitted.stdout)
    log = tmp_path / "worker.log"
    orch.start_worker(threads=4, log=log)
    orch.wait_for_job(job_id, timeout=90)
    orch.stop_all()  # the worker's last lines are written before it exits
    return job_id, log


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_real_workers_lines_about_a_number_carry_its_job_target_service_country_and_order(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    job_id, log = _run_small_job(orchestrator, tmp_path)

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    about_orders = [line for line in lines if line["event"] in {"order_placed", "code_received"}]
    assert {line["event"] for line in about_orders} >= {"order_placed", "code_received"}
    for line in about_orders:
        assert line["job_id"] == job_id, line
        assert line["job"] == "logged", line
        assert line["target"] in {0, 1}, line
        assert (line["service_id"], line["service"]) in {(1003, "Telegram"), (924, "Tiktok/Douyin")}
        assert line["country"] and line["country_id"] in {16, 1}, line
        assert line["order_id"], line
    # The lines of one message's slots each name their own slot, never a neighbour's.
    placed = {line["order_id"]: line["activation_id"] for line in about_orders}
    rows = {row["order_id"]: row for row in orchestrator.export(job_id)}
    for order_id, activation_id in placed.items():
        assert int(rows[order_id]["slot"]) == _slot_of(lines, activation_id)


def _slot_of(lines: list[dict[str, object]], activation_id: object) -> int:
    slots = {line["slot"] for line in lines if line.get("activation_id") == activation_id}
    assert len(slots) == 1, slots
    return int(str(slots.pop()))


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_csvs_spent_column_sums_to_what_the_providers_ledger_kept(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job_id, _ = _run_small_job(orchestrator, tmp_path)

    rows = orchestrator.export(job_id)
    orders = sandbox.ledger.snapshot(time.time())["orders"]
    kept = sum((Decimal(o["cost"]) for o in orders if not o["refunded"]), Decimal(0))
    charged = sum((Decimal(o["cost"]) for o in orders), Decimal(0))

    assert sum(Decimal(row["spent"]) for row in rows) == kept
    assert any(row["status"] == "cancelled" for row in rows), "a refund to leave out"
    assert kept < charged, "summing cost would overstate the spend"
    for row in rows:
        if row["status"] == "cancelled":
            assert row["spent"] == "0.00"
        elif row["status"] == "received":
            assert row["spent"] == row["cost"]
            assert row["error"] == ""


def _slot(**values: Any) -> tuple[Activation, Job, Target]:
    job = Job(id=7, name="nightly", source="", code_timeout=60.0)
    target = Target(
        id=3,
        job_id=7,
        position=1,
        service_id=1003,
        service_name="Telegram",
        countries="[]",
        quantity=2,
    )
    act = Activation(id=11, job_id=7, target_id=3, slot=4, service_id=1003, **values)
    return act, job, target


def test_a_slot_names_only_what_is_known_of_it_and_the_context_before_comes_back() -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(order_id="778-of-another-slot", worker="w1")
    planned = _slot()

    with about(*planned):
        inside = structlog.contextvars.get_contextvars()

    assert inside == {
        "worker": "w1",
        "job_id": 7,
        "activation_id": 11,
        "slot": 4,
        "job": "nightly",
        "target": 1,
        "service": "Telegram",
        "service_id": 1003,
    }, "no country or order yet, and never another slot's"
    assert structlog.contextvars.get_contextvars() == {
        "order_id": "778-of-another-slot",
        "worker": "w1",
    }
    structlog.contextvars.clear_contextvars()


def test_a_step_that_fails_leaves_its_slot_named_for_the_line_that_reports_it() -> None:
    structlog.contextvars.clear_contextvars()
    bought = _slot(country_id=16, country_name="United Kingdom", order_id="991")

    with pytest.raises(RuntimeError), about(*bought):
        raise RuntimeError("the database went away")

    left = structlog.contextvars.get_contextvars()
    assert (left["order_id"], left["country"], left["job"]) == ("991", "United Kingdom", "nightly")
    structlog.contextvars.clear_contextvars()
