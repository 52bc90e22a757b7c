"""What a script reads: ``--json`` documents checked against the database and the simulator,
``export --output -``, and tables that a pipe gets whole."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from orchestrator.cli.output import UNCUT, Stdout
from orchestrator.db import queries
from orchestrator.db.models import State
from orchestrator.money import from_micros, shown
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, submitted_job_id, write_job

pytestmark = pytest.mark.slow

JOB = """\
name: scripted
budget: 20.00
code_timeout: 3s
targets:
  - service: Telegram
    country: 16
    quantity: 3
    max_price: 2.00
"""
MONEY = re.compile(r"\d+\.\d{2,}")


def _document(result: Any) -> Any:
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)  # the whole of stdout is one document


def _utc(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value)


def test_status_json_and_export_to_stdout_match_the_database(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    ran = orchestrator.run("run", str(write_job(tmp_path, JOB)), "--workers", "1", timeout=120)
    assert ran.returncode in (0, 1), ran.stderr[-2000:]
    with Session(orchestrator.engine) as session:
        job = queries.get_job(session, "scripted")
        assert job.id is not None
        counts = queries.state_counts(session, job.id)
        spent = shown(from_micros(queries.spend_micros(session, job.id)))
        rows = queries.export_rows(session, [job.id])

    listed = _document(orchestrator.run("status", "--json"))
    (entry,) = listed["jobs"]
    assert entry["id"] == job.id and entry["name"] == "scripted"
    assert entry["status"] == job.status.value == "finished"
    assert entry["numbers"] == 3 and entry["received"] == counts[State.RECEIVED]
    assert entry["spent"] == spent and MONEY.fullmatch(spent)
    assert entry["budget"] == "20.00"
    assert _utc(entry["created_at"]) == job.created_at
    assert _utc(entry["finished_at"]) == job.finished_at
    assert listed["breakers"] == []

    one = _document(orchestrator.run("status", str(job.id), "--json"))
    assert one["job"]["id"] == job.id
    assert one["job"]["states"] == {state.value: counts[state] for state in State}
    assert one["job"]["ended"] == one["job"]["numbers"] == 3
    assert one["job"]["spent"] == spent
    assert one["job"]["reserved"] == shown(from_micros(job.reserved_micros))
    assert one["job"]["buying_paused"] is None
    (target,) = one["targets"]
    assert target["service"] == {"id": 1003, "name": "Telegram"}
    assert target["kind"] == "quantity" and target["wanted"] == 3
    assert target["received"] == counts[State.RECEIVED]
    assert target["max_price"] == "2.00" and target["spent"] == spent
    bought = sum(1 for _, _, act in rows if act.order_id is not None)
    assert target["bought"] == bought == len(sandbox.ledger.orders())

    exported = orchestrator.run("export", str(job.id), "--output", "-")
    assert exported.returncode == 0, exported.stderr
    records = list(csv.DictReader(io.StringIO(exported.stdout, newline="")))
    assert [(r["slot"], r["status"], r["order_id"]) for r in records] == [
        (str(act.slot), act.state.value, act.order_id or "") for _, _, act in rows
    ]
    assert "wrote 3 rows of 1 job to stdout" in exported.stderr
    to_file = orchestrator.run("export", str(job.id), "--output", "rows.csv")
    assert to_file.returncode == 0, to_file.stderr
    assert exported.stdout == (tmp_path / "rows.csv").read_text(encoding="utf-8")
    assert not list(tmp_path.glob("-*")), "no file named '-' was written"

    lines = orchestrator.run("export", "scripted", "--output", "-", "--format", "jsonl")
    assert lines.returncode == 0, lines.stderr
    assert [json.loads(line)["status"] for line in lines.stdout.splitlines()] == [
        r["status"] for r in records
    ]


def test_balance_services_and_prices_json_say_what_the_provider_said(
    orchestrator: Orchestrator, sandbox: SandboxServer
) -> None:
    balance = _document(orchestrator.run("balance", "--json"))
    assert balance == {"balance": shown(sandbox.config.balance)}

    services = _document(orchestrator.run("services", "--json"))["services"]
    assert services == [{"id": s.id, "name": s.name} for s in sandbox.config.services]

    prices = _document(orchestrator.run("prices", "telegram", "--json"))
    telegram = next(s for s in sandbox.config.services if s.id == 1003)
    assert prices["service"] == {"id": 1003, "name": "Telegram"}
    names = {c.id: c.name for c in sandbox.config.countries}
    expected = sorted(telegram.offers.items(), key=lambda item: item[1].cost)
    assert prices["countries"] == [
        {
            "id": country,
            "name": names[country],
            "price": shown(offer.cost),
            "stock": offer.count,
            "advertised_rate": offer.rate / 100,
        }
        for country, offer in expected
    ]
    assert all(MONEY.fullmatch(c["price"]) for c in prices["countries"])


def test_a_piped_table_is_as_wide_as_its_longest_name(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    name = "a-job-name-as-long-as-a-job-name-may-be-" + "x" * 24  # 64 characters
    job = write_job(tmp_path, JOB.replace("name: scripted", f"name: {name}"))
    submitted = orchestrator.run("submit", str(job))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted_job_id(submitted.stdout)

    # stdout a pipe, and no terminal anywhere: rich alone would fold at 80 columns.
    listed = orchestrator.run("status")

    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if f" {job_id} " in line]
    assert name in row
    assert "active" in row and "20.00" in row and len(row) > 80


def test_stdout_is_uncut_off_a_terminal_and_the_terminals_width_on_one() -> None:
    table = Table("id", "name")
    table.add_row("1", "x" * 300)
    piped = Stdout(file=StringIO())
    piped.print(table)
    text = piped.file.getvalue()  # type: ignore[attr-defined]
    assert piped.width == UNCUT
    assert "x" * 300 in text and len(text.splitlines()) == 5  # top, header, rule, row, bottom

    terminal = Stdout(file=StringIO(), force_terminal=True, width=100)
    assert terminal.width == 100
    assert Console(file=StringIO(), width=100).width == 100


def test_money_in_json_keeps_two_decimals_or_more() -> None:
    from orchestrator.cli.output import json_money

    assert json_money(Decimal("1.8")) == "1.80"
    assert json_money(Decimal("0.1234")) == "0.1234"
    assert json_money(None) is None
