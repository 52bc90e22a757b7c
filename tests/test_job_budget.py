"""A budget that can buy nothing is refused before anything starts; one that can buy fewer
numbers than asked is allowed with a warning. A job file is checked before the embedded
broker starts, and a SIGTERM'd ``plan`` leaves no broker behind."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.jobs.budget_fit import budget_warning
from orchestrator.jobs.spec import parse_job_spec
from orchestrator.sandbox.server import SandboxServer
from tests.conftest import FAST_PROVIDER
from tests.running import alive, descendants, identity
from tests.support import COMMAND, Orchestrator, fast_env, write_job

JOB = """\
name: tight
budget: {budget}
code_timeout: 5s
targets:
  - service: Telegram
    country: United Kingdom
    quantity: 4
    max_price: 2.00
  - service: 924
    country: 16
    codes: 2
    max_price: 0.50
"""


def _embedded(tmp_path: Path, base_url: str) -> Orchestrator:
    """The command with REDIS_URL unset: it would start the data folder's embedded Valkey."""
    env = fast_env(base_url, "", f"sqlite:///{tmp_path / 'o.db'}", tmp_path)
    del env["REDIS_URL"]
    return Orchestrator(workdir=tmp_path, env=env)


@pytest.mark.parametrize("command", ["submit", "run", "plan"])
def test_a_budget_below_every_cap_is_refused_naming_the_file_and_field_before_any_broker(
    tmp_path: Path, sandbox: SandboxServer, command: str
) -> None:
    job = write_job(tmp_path, JOB.format(budget="0.40"))

    result = _embedded(tmp_path, sandbox.url).run(command, str(job))

    assert result.returncode == ExitCode.BAD_INPUT, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"{job}: budget" in line
    assert "below the lowest max_price (0.50): nothing could be bought" in line
    assert not (tmp_path / "data" / "valkey").exists(), "no broker was started for a bad file"
    assert sandbox.ledger.orders() == []


def test_a_budget_for_fewer_numbers_than_asked_is_warned_of() -> None:
    def warning(budget: str) -> str | None:
        return budget_warning(parse_job_spec(JOB.format(budget=budget), "tight.yaml"))

    assert warning("9.00") is None  # 4 x 2.00 + 2 x 0.50
    short = warning("5.00")
    assert short is not None
    # The cheapest caps first: 2 x 0.50, then 2 of the 4 at 2.00.
    assert short.startswith("budget 5.00 holds 4 of the 6 numbers asked for at their caps (9.00")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_submit_warns_when_the_budget_allows_fewer_numbers_than_asked(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    job = write_job(tmp_path, JOB.format(budget="5.00"))

    result = orchestrator.run("submit", str(job))

    assert result.returncode == ExitCode.OK, result.stderr
    [warned] = [json.loads(line) for line in result.stderr.splitlines() if "budget_short" in line]
    assert warned["level"] == "warning"
    assert warned["job"] == "tight" and warned["file"] == str(job)
    assert "holds 4 of the 6 numbers" in warned["message"]


@pytest.fixture
def slow_provider() -> Iterator[SandboxServer]:
    """A provider whose every answer takes half a minute: ``plan`` waits on it."""
    with SandboxServer(replace(FAST_PROVIDER, fault_slow=1.0, slow_seconds=30.0)) as server:
        yield server


@pytest.mark.slow
def test_a_plan_stopped_by_sigterm_leaves_no_embedded_broker_running(
    tmp_path: Path, slow_provider: SandboxServer
) -> None:
    orch = _embedded(tmp_path, slow_provider.url)
    job = write_job(tmp_path, JOB.format(budget="9.00"))
    proc = subprocess.Popen(
        [*COMMAND, "plan", str(job)],
        cwd=tmp_path,
        env=orch.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    seen: dict[int, tuple[bytes, str]] = {}
    try:
        deadline = time.monotonic() + 30
        while not any(b"valkey-server" in line for line, _ in seen.values()):
            assert time.monotonic() < deadline, "the embedded broker never started"
            seen |= {pid: i for pid in descendants(proc.pid) if (i := identity(pid))}
            time.sleep(0.1)
        time.sleep(1.0)  # plan is now waiting on the provider

        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == ExitCode.TERMINATED, err
    assert b"interrupted; nothing was bought" in err
    deadline = time.monotonic() + 10
    while any(alive(pid, i) for pid, i in seen.items()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid, i in seen.items() if alive(pid, i)], "a broker was left running"
