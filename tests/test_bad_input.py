"""Bad input stops the real CLI: exit 2, a message naming file, field and problem, no purchase."""

from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.db.engine import create_tables, make_engine, transaction
from orchestrator.db.models import Activation, Job
from orchestrator.sandbox.config import DEMO_API_KEY
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, write_job

# Both ways a job file enters: `run` with no local workers, and `submit`; and `plan`, which
# must refuse what they refuse. A `run` that wrongly accepted its file would wait for workers
# forever; the timeout turns that into a failure.
COMMANDS = {"run": ("--workers", "0"), "submit": (), "plan": ()}
TIMEOUT = 30.0

VALID = """\
name: nightly
budget: 10.00
code_timeout: 5m
targets:
  - service: Telegram
    country: United Kingdom
    quantity: 2
    max_price: 2.00
"""


@dataclass(frozen=True)
class Case:
    """A job file with one mistake, and what the error must say about it."""

    body: str
    field: str  # the field path the message names; "" when the file as a whole is wrong
    problem: str  # a fragment of what the message says is wrong


def _edit(old: str, new: str) -> str:
    """The valid job with one line replaced."""
    assert old in VALID
    return VALID.replace(old, new)


CASES = {
    "unknown top-level key": Case(
        _edit("budget: 10.00", "budjet: 10.00"),
        "budjet",
        "is not a known key; did you mean 'budget'?",
    ),
    "unknown target key": Case(
        _edit("    quantity: 2\n", "    quantity: 2\n    priority: high\n"),
        "targets[0].priority",
        "is not a known key",
    ),
    "quantity of the wrong type": Case(
        _edit("quantity: 2", "quantity: five"),
        "targets[0].quantity",
        "must be a whole number of at least 1, got 'five'",
    ),
    "negative quantity": Case(
        _edit("quantity: 2", "quantity: -3"),
        "targets[0].quantity",
        "must be a whole number of at least 1, got -3",
    ),
    "zero quantity": Case(
        _edit("quantity: 2", "quantity: 0"),
        "targets[0].quantity",
        "must be a whole number of at least 1, got 0",
    ),
    "cap that is not money": Case(
        _edit("max_price: 2.00", "max_price: cheap"),
        "targets[0].max_price",
        "must be an amount of money like 1.50, got 'cheap'",
    ),
    "negative cap": Case(
        _edit("max_price: 2.00", "max_price: -1.50"),
        "targets[0].max_price",
        "must be more than 0, got -1.5",
    ),
    "unknown service name": Case(
        _edit("service: Telegram", "service: Telegrm"),
        "targets[0].service",
        "unknown service 'Telegrm'; did you mean 'Telegram' (1003)?",
    ),
    "unknown country name": Case(
        _edit("country: United Kingdom", "country: Atlantis"),
        "targets[0].country",
        "unknown country 'Atlantis' for Telegram (1003)",
    ),
    "unknown country id": Case(
        _edit("country: United Kingdom", "country: 999"),
        "targets[0].country",
        "no country has id 999 for Telegram (1003)",
    ),
    "code timeout that does not parse": Case(
        _edit("code_timeout: 5m", "code_timeout: soon"),
        "code_timeout",
        "must be a duration like 45s, 10m, 1.5m, 1h30m or a number of seconds, got 'soon'",
    ),
    "empty targets": Case(
        "name: nightly\ntargets: []\n",
        "targets",
        "must not be empty",
    ),
    "missing targets": Case(
        "name: nightly\nbudget: 10.00\n",
        "targets",
        "is required",
    ),
    "bad YAML syntax": Case(
        _edit("targets:\n", "targets: [\n"),
        "",
        "is not valid YAML",
    ),
    "a YAML list instead of a mapping": Case(
        "- name: nightly\n- targets: []\n",
        "",
        "must be a mapping of keys (name, targets, ...), got a list",
    ),
    # User text must come back as written, not be read as terminal markup (it once crashed).
    "a service name that looks like markup": Case(
        _edit("service: Telegram", "service: '[/bold]'"),
        "targets[0].service",
        "unknown service '[/bold]'",
    ),
}


@pytest.fixture
def cli(tmp_path: Path, sandbox: SandboxServer, redis_url: str, sqlite_url: str) -> Orchestrator:
    """The ``orchestrator`` command on the simulator, Redis and an SQLite file (fast)."""
    return Orchestrator(
        workdir=tmp_path,
        env={
            "LEGITSMS_BASE_URL": sandbox.url,
            "LEGITSMS_API_KEY": DEMO_API_KEY,
            "REDIS_URL": redis_url,
            "DATABASE_URL": sqlite_url,
            "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"),
            "ORCHESTRATOR_RATE_LIMIT": "0",
        },
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_bad_job_file_exits_2_naming_the_file_the_field_and_the_problem(
    cli: Orchestrator, sandbox: SandboxServer, tmp_path: Path, case: Case
) -> None:
    job_file = write_job(tmp_path, case.body)

    results = _run_and_submit(cli, job_file)

    where = f"{job_file}: {case.field}: " if case.field else f"{job_file}: "
    for command, result in results.items():
        assert result.returncode == ExitCode.BAD_INPUT, (command, result.stderr)
        assert result.stderr.startswith(f"error: {where}"), (command, result.stderr)
        assert case.problem in result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr, command
    _assert_nothing_bought_and_no_job(cli, sandbox)


def test_a_job_file_that_does_not_exist_exits_2_saying_so(
    cli: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    missing = tmp_path / "jobs" / "nightly.yaml"

    results = _run_and_submit(cli, missing)

    for command, result in results.items():
        assert result.returncode == ExitCode.BAD_INPUT, (command, result.stderr)
        assert result.stderr.strip() == f"error: {missing}: no such file", command
    _assert_nothing_bought_and_no_job(cli, sandbox)


def test_an_unknown_setting_in_the_config_file_exits_2_naming_the_file_and_the_setting(
    cli: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path, VALID)
    config = tmp_path / "settings.yaml"
    config.write_text("rate_limitt: 2\n")

    results = _run_and_submit(cli, job_file, "--config", str(config))

    for command, result in results.items():
        assert result.returncode == ExitCode.BAD_INPUT, (command, result.stderr)
        assert result.stderr.strip() == (
            f"error: {config}: rate_limitt: is not a known setting; did you mean 'rate_limit'?"
        ), command
    _assert_nothing_bought_and_no_job(cli, sandbox)


def test_a_rate_limit_that_is_not_a_number_exits_2_naming_the_environment_variable(
    cli: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path, VALID)
    cli.env["ORCHESTRATOR_RATE_LIMIT"] = "fast"

    results = _run_and_submit(cli, job_file)

    for command, result in results.items():
        assert result.returncode == ExitCode.BAD_INPUT, (command, result.stderr)
        prefix = "error: environment variable ORCHESTRATOR_RATE_LIMIT: "
        assert result.stderr.startswith(prefix), (command, result.stderr)
        assert "valid number" in result.stderr, command
        # No config file exists here, so the message must not blame one.
        assert "config.yaml" not in result.stderr, command
    _assert_nothing_bought_and_no_job(cli, sandbox)


def test_a_missing_api_key_exits_2_saying_how_to_set_it(
    cli: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path, VALID)
    del cli.env["LEGITSMS_API_KEY"]

    results = _run_and_submit(cli, job_file)

    for command, result in results.items():
        assert result.returncode == ExitCode.BAD_INPUT, (command, result.stderr)
        assert result.stderr.strip() == (
            "error: no API key: set LEGITSMS_API_KEY or api_key in config.yaml"
        ), command
    _assert_nothing_bought_and_no_job(cli, sandbox)


def test_the_valid_job_these_cases_break_is_submitted_by_the_same_setup(
    cli: Orchestrator, tmp_path: Path
) -> None:
    # The control: without its one mistake, the file submits, and the database check sees it.
    job_file = write_job(tmp_path, VALID)

    result = cli.run("submit", str(job_file), timeout=TIMEOUT)

    assert result.returncode == ExitCode.OK, result.stderr
    assert _job_and_slot_counts(cli.env["DATABASE_URL"]) == (1, 2)


def _database_of(cli: Orchestrator, command: str) -> str:
    return f"sqlite:///{cli.workdir / f'{command}.db'}"


def _run_and_submit(
    cli: Orchestrator, job_file: Path, *options: str
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Give the file to `run`, `submit` and `plan` at once (each with its own database), to
    save time."""

    def one(command: str) -> subprocess.CompletedProcess[str]:
        args = [*options, command, str(job_file), *COMMANDS[command]]
        return cli.run(*args, timeout=TIMEOUT, DATABASE_URL=_database_of(cli, command))

    with ThreadPoolExecutor(len(COMMANDS)) as pool:
        return dict(zip(COMMANDS, pool.map(one, COMMANDS), strict=True))


def _assert_nothing_bought_and_no_job(cli: Orchestrator, sandbox: SandboxServer) -> None:
    ledger = sandbox.ledger.snapshot(time.time())
    assert ledger["orders"] == []
    assert Decimal(ledger["totals"]["charged"]) == 0
    assert "POST /order" not in ledger["requests"], ledger["requests"]
    for command in COMMANDS:
        assert _job_and_slot_counts(_database_of(cli, command)) == (0, 0), f"{command} made a job"


def _job_and_slot_counts(database_url: str) -> tuple[int, int]:
    engine = make_engine(database_url)
    try:
        create_tables(engine)  # a command stopped before it first opened the database left none
        with transaction(engine) as session:
            jobs = session.exec(select(func.count()).select_from(Job)).one()
            slots = session.exec(select(func.count()).select_from(Activation)).one()
        return jobs, slots
    finally:
        engine.dispose()
