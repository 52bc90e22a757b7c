"""``orchestrator plan`` through the real command against the simulator over HTTP: it ranks,
forecasts and buys nothing; a bad file exits 2 naming the field; ``--json`` keeps its shape."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlalchemy import func
from sqlmodel import Session, select

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.db.models import Job
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, write_job

JOB = """\
name: nightly
budget: 20.00
targets:
  - service: Telegram
    countries: ["United States", 16, 43]
    codes: 10
    max_price: 2.00
  - service: Whatsapp
    countries: any
    exclude: [India]
    quantity: 5
    max_price: 2.00
"""


def test_plan_ranks_the_countries_forecasts_and_buys_nothing(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    result = orchestrator.run("plan", str(write_job(tmp_path, JOB)), timeout=60)

    assert result.returncode == ExitCode.OK, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "target 0: Telegram (1003), 10 codes, at most 30 numbers, cap 2.00"
    # Telegram: UK 1.55 / 67% < Germany 1.90 / 69% < US 1.80 / 64% per code.
    assert lines[1].startswith("  1. United Kingdom (16): price 1.55, stock ")
    assert "advertised 67.0%, estimated 67.0%, 2.3134 per code" in lines[1]
    assert lines[2].startswith("  2. Germany (43)")
    assert lines[3].startswith("  3. United States (1)")
    assert "numbers to buy 15 (median), 19 (p90)" in lines[4]
    assert "spend 15.50" in lines[5]
    assert "  passed over: United States: price 2.66 above the cap 2.00" in lines
    assert lines[-1].startswith("job nightly: spend 21.35 (median)")
    assert lines[-1].endswith("budget 20.00 does NOT suffice")
    ledger = sandbox.ledger.snapshot(time.time())
    assert ledger["orders"] == []
    # As submit asks: the services once, the prices once per service.
    assert {k: v for k, v in ledger["requests"].items() if not k.startswith("GET /prices")} == {
        "GET /services": 1
    }, ledger["requests"]
    assert sum(v for k, v in ledger["requests"].items() if k.startswith("GET /prices")) == 2
    with Session(orchestrator.engine) as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == 0


def test_plan_refuses_a_bad_job_file_naming_the_field(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    bad = write_job(tmp_path, JOB.replace("codes: 10", "codes: 0"))

    result = orchestrator.run("plan", str(bad), timeout=60)

    assert result.returncode == ExitCode.BAD_INPUT
    assert f"error: {bad}: targets[0].codes: must be a whole number of at least 1" in result.stderr
    assert result.stdout == ""

    unknown = write_job(tmp_path, JOB.replace("service: Whatsapp", "service: Whatsap"))
    result = orchestrator.run("plan", str(unknown), timeout=60)
    assert result.returncode == ExitCode.BAD_INPUT
    assert "targets[1].service: unknown service 'Whatsap'" in result.stderr
    assert sandbox.ledger.snapshot(time.time())["orders"] == []


def test_plan_json_has_the_documented_keys(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    result = orchestrator.run("plan", str(write_job(tmp_path, JOB)), "--json", timeout=60)

    assert result.returncode == ExitCode.OK, result.stderr
    doc = json.loads(result.stdout)
    assert set(doc) == {"job", "budget", "budget_needed", "budget_suffices", "spend", "targets"}
    assert (doc["job"], doc["budget"], doc["budget_suffices"]) == ("nightly", "20.00", False)
    assert doc["spend"] == {"median": "21.35", "p90": "23.30"}
    codes, quantity = doc["targets"]
    assert set(codes) == {
        "target",
        "service",
        "kind",
        "wanted",
        "max_numbers",
        "max_price",
        "countries",
        "passed_over",
        "country",
        "numbers",
        "codes",
        "max_numbers_chance",
        "spend",
        "reserve",
    }
    assert codes["service"] == {"id": 1003, "name": "Telegram"}
    assert (codes["kind"], codes["wanted"], codes["max_numbers"]) == ("codes", 10, 30)
    assert codes["countries"][0] == {
        "id": 16,
        "name": "United Kingdom",
        "price": "1.55",
        "stock": codes["countries"][0]["stock"],
        "advertised_rate": 0.67,
        "estimated_rate": 0.67,
        "cost_per_code": "2.3134",
    }
    assert codes["numbers"] == {"median": 15, "p90": 19}
    assert codes["spend"] == {"median": "15.50", "p90": "15.50"}
    assert (codes["country"], codes["reserve"]) == (16, "30.00")
    assert quantity["kind"] == "quantity"
    assert quantity["passed_over"] == [
        {"name": "United States", "reason": "price 2.66 above the cap 2.00"}
    ]
    assert quantity["codes"] == {"median": 3, "p10": 2}
    assert quantity["max_numbers_chance"] is None
