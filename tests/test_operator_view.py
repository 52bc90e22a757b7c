"""What an operator sees: export path templates, --quiet, multi-job exports, status and the
live progress bar (the HTML report: test_report.py)."""

from __future__ import annotations

import csv
import json
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import update
from sqlmodel import Session, col, select

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.progress_bar import ProgressBar
from orchestrator.cli.watch import Progress
from orchestrator.db.models import Job, JobStatus, State
from orchestrator.jobs.export_path import PathTemplate, TemplateError
from orchestrator.logs import CONSOLE_ENV, at_least
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, submitted_job_id, write_job
from workers.runner import LocalWorkers, child_env

SMALL = """\
name: nightly
budget: 20.00
code_timeout: 3s
targets:
  - service: Telegram
    country: 16
    quantity: 3
    max_price: 2.00
"""


# --- the export path template ------------------------------------------------------------


def test_an_export_template_is_filled_with_the_jobs_name_id_and_utc_submission_time() -> None:
    template = PathTemplate.parse("out/{name}-{date}-{time}-{job_id:04d}.csv")
    submitted = datetime(2026, 11, 25, 1, 30, 5, tzinfo=timezone(timedelta(hours=3)))

    path = template.expand(name="nightly", job_id=42, submitted=submitted)

    assert path == Path("out/nightly-2026-11-24-223005-0042.csv")


def test_an_export_path_without_placeholders_is_used_as_it_is() -> None:
    path = PathTemplate.parse("out/plain.csv").expand(
        name="x", job_id=1, submitted=datetime.now(UTC)
    )
    assert path == Path("out/plain.csv")


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("out/{jobid}.csv", "{jobid}"),
        ("out/{}.csv", "{}"),
        ("out/{name.upper}.csv", "{name.upper}"),
        ("out/{name.csv", "does not parse"),
        ("out/{date:d}.csv", "{date:d}"),
    ],
)
def test_an_export_template_with_an_unknown_or_broken_placeholder_is_refused(
    text: str, named: str
) -> None:
    with pytest.raises(TemplateError) as caught:
        PathTemplate.parse(text)
    message = str(caught.value)
    assert text in message
    assert named in message or "format code" in message
    if "unknown" in message:
        assert "{name}, {job_id}, {date}, {time}" in message


def test_quiet_raises_the_log_level_to_warning_and_never_lowers_it() -> None:
    assert at_least("info", "warning") == "warning"
    assert at_least("debug", "warning") == "warning"
    assert at_least("error", "warning") == "error"


def test_the_workers_run_starts_get_its_broker_settings_file_log_level_and_log_format() -> None:
    env = child_env(
        "redis://h:6379/2", log_level="warning", config=Path("conf.yaml"), console_logs=True
    )

    assert env["REDIS_URL"] == "redis://h:6379/2"
    assert env["ORCHESTRATOR_LOG_LEVEL"] == "warning"
    assert env["ORCHESTRATOR_CONFIG"] == str(Path("conf.yaml").resolve())
    assert env[CONSOLE_ENV] == "1"
    assert CONSOLE_ENV not in child_env("redis://h:6379/2")


# --- the live progress bar ---------------------------------------------------------------


def test_the_progress_bar_on_a_terminal_shows_the_counts_and_spend_against_budget() -> None:
    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=220, color_system=None)
    counts = dict.fromkeys(State, 0)
    counts.update(
        {
            State.RECEIVED: 3,
            State.WAITING: 2,
            State.CANCELLING: 1,
            State.CANCELLED: 1,
            State.FAILED: 1,
            State.IN_DOUBT: 1,
            State.PLANNED: 2,
        }
    )
    progress = Progress(JobStatus.ACTIVE, counts, Decimal("4.50"), Decimal("20.00"))

    with ProgressBar(console, 7) as bar:
        bar.update(progress)

    shown = screen.getvalue()
    assert "job 7" in shown
    assert "6/11" in shown  # received, cancelled, failed and in doubt have ended
    assert "3 received" in shown
    # Bought and not ended: two wait for a code, one for its cancel to take; two to buy.
    for count in ("2 waiting", "1 cancelling", "2 to buy"):
        assert count in shown
        assert count in progress.line()
    assert "1 cancelled" in shown
    assert "1 failed, 1 in doubt" in shown
    assert "spent 4.50 of 20.00 (22%)" in shown
    assert "codes" not in shown, "a numbers job is judged by its numbers"
    assert "\x1b[" in shown, "drawn for a terminal (cursor control), not as log lines"


def test_worker_output_under_a_live_bar_is_handed_over_line_by_line() -> None:
    lines: list[str] = []
    argv = [sys.executable, "-c", "import sys; print('one'); print('two', file=sys.stderr)"]
    workers = LocalWorkers(argv, 1, {}, on_line=lines.append)
    deadline = time.monotonic() + 10
    while len(lines) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers.stop()

    assert sorted(lines) == ["one", "two"]


# --- on real parts: the CLI, the simulator, Redis and the database -----------------------


def _submit(orchestrator: Orchestrator, folder: Path, body: str, file: str) -> int:
    result = orchestrator.run("submit", str(write_job(folder, body, file)), "--allow-overlap")
    assert result.returncode == 0, result.stderr
    return submitted_job_id(result.stdout)


def _backdate(orchestrator: Orchestrator, job_id: int, when: datetime) -> None:
    with Session(orchestrator.engine) as session:
        session.execute(update(Job).where(col(Job.id) == job_id).values(created_at=when))
        session.commit()


def test_status_exits_5_with_one_line_when_the_database_does_not_answer(tmp_path: Path) -> None:
    orch = Orchestrator(
        workdir=tmp_path,
        env={"DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/none"},
    )

    result = orch.run("status", timeout=60)

    assert result.returncode == ExitCode.UNAVAILABLE
    assert (
        result.stderr.strip().splitlines()[-1].startswith("error: the database could not be used: ")
    )
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_bad_placeholder_in_the_export_path_exits_2_and_buys_nothing(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job = write_job(tmp_path, SMALL)

    result = orchestrator.run("run", str(job), "--export", "out/{nmae}-{date}.csv")

    assert result.returncode == ExitCode.BAD_INPUT
    assert "unknown placeholder {nmae}" in result.stderr
    assert "{name}, {job_id}, {date}, {time}" in result.stderr
    assert sandbox.ledger.orders() == []
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_quiet_run_prints_only_its_summary_line_and_exports_to_the_expanded_path(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job = write_job(tmp_path, SMALL)

    result = orchestrator.run(
        "run", str(job), "--quiet", "--export", "out/{name}-{date}-{job_id}.jsonl", timeout=120
    )

    assert result.returncode in (ExitCode.OK, ExitCode.INCOMPLETE), result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("job 1: 3/3 ended: ")
    for line in result.stderr.splitlines():  # the workers' logs too: nothing below warning
        assert json.loads(line)["level"] in {"warning", "error", "critical"}, line
    with Session(orchestrator.engine) as session:
        submitted = session.execute(select(Job.created_at)).scalar_one()
    path = tmp_path / "out" / f"nightly-{submitted.strftime('%Y-%m-%d')}-1.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["slot"] for r in records] == [0, 1, 2]
    ledger = {o["order_id"]: o for o in sandbox.ledger.snapshot(time.time())["orders"]}
    assert {r["order_id"] for r in records} == set(ledger)
    for record in records:
        assert isinstance(record["cost"], str) and isinstance(record["max_price"], str)
        assert Decimal(record["cost"]) == Decimal(ledger[record["order_id"]]["cost"])
        assert record["ordered_at"].endswith("Z")
        assert record["status"] in {"received", "cancelled"}
        assert (record["code"] is None) == (record["status"] != "received")


@pytest.mark.slow
def test_export_writes_several_jobs_chosen_by_name_and_by_day_as_csv_or_json_lines(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    other = SMALL.replace("name: nightly", "name: weekly")
    old_nightly = _submit(orchestrator, tmp_path, SMALL, "a.yaml")
    weekly = _submit(orchestrator, tmp_path, other, "b.yaml")
    new_nightly = _submit(orchestrator, tmp_path, SMALL, "c.yaml")
    _backdate(orchestrator, old_nightly, datetime(2026, 1, 10, 23, 59, tzinfo=UTC))
    _backdate(orchestrator, weekly, datetime(2026, 1, 11, 0, 0, tzinfo=UTC))
    _backdate(orchestrator, new_nightly, datetime(2026, 1, 12, 12, 0, tzinfo=UTC))

    by_name = orchestrator.run("export", "--name", "nightly", "--output", "all.csv")
    by_day = orchestrator.run(
        "export", "--since", "2026-01-11", "--until", "2026-01-12", "--output", "days.jsonl"
    )
    mixed = orchestrator.run(
        "export", str(old_nightly), "--until", "2026-01-11", "--name", "weekly", "-o", "m.txt",
        "--format", "jsonl",
    )  # fmt: skip
    nothing = orchestrator.run("export", "--since", "2027-01-01", "--output", "none.csv")
    no_selector = orchestrator.run("export", "--output", "none.csv")

    assert by_name.returncode == 0, by_name.stderr
    with (tmp_path / "all.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["job_id"]), int(r["slot"])) for r in rows] == [
        (old_nightly, 0), (old_nightly, 1), (old_nightly, 2),
        (new_nightly, 0), (new_nightly, 1), (new_nightly, 2),
    ]  # fmt: skip
    assert "wrote 6 rows of 2 jobs" in by_name.stdout
    assert by_day.returncode == 0, by_day.stderr
    records = [json.loads(line) for line in (tmp_path / "days.jsonl").read_text().splitlines()]
    assert sorted({r["job_id"] for r in records}) == [weekly, new_nightly]
    assert set(records[0]) == set(rows[0]), "JSON lines carry the CSV's keys"
    assert records[0]["max_price"] == "2.00"
    assert records[0]["order_id"] is None and records[0]["status"] == "planned"
    assert mixed.returncode == 0, mixed.stderr
    lines = (tmp_path / "m.txt").read_text().splitlines()
    assert sorted({json.loads(line)["job_id"] for line in lines}) == [old_nightly, weekly]
    assert nothing.returncode == ExitCode.BAD_INPUT
    assert "no job matches since 2027-01-01" in nothing.stderr
    assert no_selector.returncode == ExitCode.BAD_INPUT
    assert "name the jobs to export" in no_selector.stderr


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_status_shows_each_job_with_its_spend_and_budget(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    job_id = _submit(orchestrator, tmp_path, SMALL, "a.yaml")

    recent = orchestrator.run("status", COLUMNS="200")
    one = orchestrator.run("status", str(job_id), COLUMNS="200")

    assert recent.returncode == 0, recent.stderr
    assert "spent" in recent.stdout and "budget" in recent.stdout
    assert "20.00" in recent.stdout
    assert one.returncode == 0, one.stderr
    assert "success rate" in one.stdout
    assert "0/3 ended" in one.stdout
    assert "by target" in one.stdout
