"""Exit codes as the README's table says: resolve's bad requests are 2, cancel of an ended job
is 0, and ``run --min-success`` judges a job by the share of what each target asked."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.watch import Progress
from orchestrator.db import queries
from orchestrator.db.models import Activation, JobStatus, State
from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, submitted_job_id, write_job

JOB = """\
name: verdict
code_timeout: 3s
targets:
  - service: Telegram
    country: 16
    quantity: 6
    max_price: 2.00
"""


def _progress(*goals: tuple[int, int], in_doubt: int = 0) -> Progress:
    counts = dict.fromkeys(State, 0)
    counts[State.RECEIVED] = sum(got for got, _ in goals)
    counts[State.CANCELLED] = sum(wanted - got for got, wanted in goals) - in_doubt
    counts[State.IN_DOUBT] = in_doubt
    return Progress(JobStatus.FINISHED, counts, Decimal(0), None, goals=goals)


def test_min_success_is_met_when_every_target_got_that_share_of_what_it_asked() -> None:
    assert _progress((3, 4)).exit_code() is ExitCode.INCOMPLETE
    assert _progress((3, 4)).exit_code(Decimal("0.75")) is ExitCode.OK
    assert _progress((3, 4)).exit_code(Decimal("0.8")) is ExitCode.INCOMPLETE
    assert _progress((0, 4)).exit_code(Decimal(0)) is ExitCode.OK
    # Judged per target: a target that got nothing is not hidden by one that got everything.
    assert _progress((10, 10), (0, 2)).exit_code(Decimal("0.5")) is ExitCode.INCOMPLETE
    assert _progress((10, 10), (1, 2)).exit_code(Decimal("0.5")) is ExitCode.OK


def test_an_in_doubt_purchase_exits_3_whatever_the_min_success() -> None:
    assert _progress((3, 4), in_doubt=1).exit_code(Decimal(0)) is ExitCode.IN_DOUBT


@pytest.mark.parametrize("value", ["1.5", "-0.1", "120%", "eighty", "nan", "inf", "%"])
def test_a_min_success_that_is_no_share_exits_2_before_anything_is_bought(
    value: str, tmp_path: Path
) -> None:
    job = write_job(tmp_path, JOB)

    result = CliRunner().invoke(app, ["run", str(job), "--min-success", value])

    assert result.exit_code == ExitCode.BAD_INPUT
    assert result.output.startswith("error: --min-success must be a fraction from 0 to 1")
    assert len(result.output.strip().splitlines()) == 1


# Codes come for about half the orders; with seed 5 the job below gets 4 of its 6.
HALF = SandboxConfig(seed=5, code_delay=(0.2, 1.0), never_ratio=0.5, cancel_min_age=2.0)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(HALF) as server:
        yield server


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    return sqlite_url  # the verdict is read from the counts; one database shows it


@pytest.mark.slow
def test_run_with_min_success_exits_0_when_the_share_came_and_cancel_after_it_is_0(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job = write_job(tmp_path, JOB)

    result = orchestrator.run("run", str(job), "--workers", "1", "--min-success", "50%")

    with Session(orchestrator.engine) as session:
        row = queries.get_job(session, "verdict")
        assert row.id is not None
        received = queries.state_counts(session, row.id)[State.RECEIVED]
    assert 3 <= received < 6, f"the seed no longer gives a mixed result: {received} of 6"
    assert result.returncode == ExitCode.OK, result.stderr[-2000:]
    assert f"{received} received" in result.stdout

    for _ in range(2):  # safe to repeat
        cancelled = orchestrator.run("cancel", str(row.id))
        assert cancelled.returncode == ExitCode.OK, cancelled.stderr
        assert cancelled.stdout.strip() == (
            f"job {row.id} has already ended (finished); nothing to cancel"
        )


@pytest.mark.slow
def test_resolve_of_an_unknown_slot_or_one_not_in_doubt_exits_2_and_changes_nothing(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job_id = submitted_job_id(orchestrator.run("submit", str(write_job(tmp_path, JOB))).stdout)
    with Session(orchestrator.engine) as session:
        slot = session.exec(
            select(Activation).where(col(Activation.job_id) == job_id).order_by(col(Activation.id))
        ).first()
        assert slot is not None and slot.state is State.PLANNED

    unknown = orchestrator.run("resolve", "999999", "--not-bought")
    planned = orchestrator.run("resolve", str(slot.id), "--order-id", "ORD-1")

    assert unknown.returncode == ExitCode.BAD_INPUT, unknown.stderr
    assert unknown.stderr.strip() == "error: no slot 999999"
    assert planned.returncode == ExitCode.BAD_INPUT, planned.stderr
    assert planned.stderr.strip() == f"error: slot {slot.id} is planned, not in_doubt"
    with Session(orchestrator.engine) as session:
        again = session.get(Activation, slot.id)
        assert again is not None
        assert again.state is State.PLANNED and again.order_id is None
