"""Money is shown with two decimals or more wherever people read it; a job whose cancel was
asked for reads ``cancelling`` until it has ended."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine

from orchestrator.cli.status_view import job_summary, jobs_table
from orchestrator.db import queries, store
from orchestrator.db.engine import reading, transaction
from orchestrator.db.models import Job
from tests.inprocess import plan_job
from tests.support import Orchestrator


def _render(table: Table) -> str:
    screen = StringIO()
    Console(file=screen, width=200, color_system=None).print(table)
    return screen.getvalue()


def _job(engine: Engine) -> Job:
    with reading(engine) as session:
        return queries.get_job(session, 1)


def test_a_job_with_a_cancel_asked_for_reads_cancelling_with_money_in_two_decimals(
    engine: Engine,
) -> None:
    plan_job(engine, quantity=2, budget=Decimal("7.5"), cap=Decimal("1.8"))
    with reading(engine) as session:
        before = _render(jobs_table(session))
    assert "active" in before and "cancelling" not in before

    with transaction(engine) as session:
        assert store.request_job_cancel(session, queries.get_job(session, 1))

    with reading(engine) as session:
        listed = _render(jobs_table(session))
        summary = _render(job_summary(session, _job(engine)))
    for shown in (listed, summary):
        assert "cancelling" in shown
        assert "active" not in shown
        assert "7.50" in shown and "0.00" in shown
    assert "reserved" in summary


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_prices_shows_every_price_with_two_decimals(orchestrator: Orchestrator) -> None:
    result = orchestrator.run("prices", "Telegram")

    assert result.returncode == 0, result.stderr
    # The simulator lists the United States at 1.80; JSON carries it as 1.8.
    [row] = [line for line in result.stdout.splitlines() if "United States" in line]
    assert "1.80" in row.split()
