"""What ``run`` says while it works: counts that add up, codes got of wanted, JSON off a
terminal, and an interrupt line that never names a time already past."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.progress_bar import ProgressBar
from orchestrator.cli.watch import OpenOrder, Progress, finishing_line
from orchestrator.db.models import FINAL_STATES, JobStatus, State
from tests.support import COMMAND, Orchestrator, write_job

COUNTS = {
    State.PLANNED: 2,
    State.ORDERING: 1,
    State.WAITING: 3,
    State.CANCELLING: 2,
    State.RECEIVED: 4,
    State.CANCELLED: 1,
    State.EXPIRED: 0,
    State.FAILED: 1,
    State.IN_DOUBT: 0,
    State.LOST: 0,
}


def _codes_progress() -> Progress:
    return Progress(
        JobStatus.ACTIVE,
        dict(COUNTS),
        Decimal("7.2"),
        Decimal("30"),
        goals=((4, 10),),
        asks_codes=True,
    )


def test_the_live_bar_of_a_codes_job_shows_codes_got_of_wanted_and_counts_that_add_up() -> None:
    screen = StringIO()
    console = Console(file=screen, force_terminal=True, width=250, color_system=None)

    with ProgressBar(console, 3) as bar:
        bar.update(_codes_progress())

    shown = screen.getvalue()
    assert "codes 4/10" in shown
    assert "6/14" in shown
    ended = ["4 received", "1 cancelled", "0 expired", "1 failed, 0 in doubt"]
    for part in [*ended, "3 waiting", "2 cancelling", "3 to buy"]:
        assert part in shown, part
    assert "spent 7.20 of 30.00" in shown, "money with two decimals"


def test_the_progress_fields_add_up_to_the_total_and_show_money_with_two_decimals() -> None:
    fields = _codes_progress().fields()

    ended = sum(int(str(fields[s.value])) for s in FINAL_STATES)
    live = int(str(fields["waiting"])) + int(str(fields["cancelling"]))
    assert ended == fields["ended"]
    assert ended + live + int(str(fields["to_buy"])) == fields["total"] == 14
    assert (fields["spent"], fields["budget"]) == ("7.20", "30.00")
    assert (fields["codes"], fields["codes_wanted"]) == (4, 10)


def _order(ordered_at: datetime) -> OpenOrder:
    return OpenOrder(1, State.WAITING, "778", ordered_at)


def test_the_interrupt_line_names_a_time_to_come_or_says_now_never_a_time_past() -> None:
    now = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)

    fresh = finishing_line(
        [_order(now - timedelta(seconds=30))], cancel_min_age=120, signum=signal.SIGINT, now=now
    )
    old = finishing_line(
        [_order(now - timedelta(minutes=5))], cancel_min_age=120, signum=signal.SIGINT, now=now
    )

    assert "all by 12:01:31 UTC" in fresh
    assert "all by" not in old
    assert "cancelled now" in old


SMALL = """\
name: piped
budget: 20.00
code_timeout: 3s
targets:
  - service: Telegram
    country: 16
    quantity: 3
    max_price: 2.00
"""


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_off_a_terminal_every_line_run_writes_on_stderr_is_a_json_object(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    job = write_job(tmp_path, SMALL)

    result = orchestrator.run("run", str(job), "--export", str(tmp_path / "out.csv"))

    assert result.returncode in (ExitCode.OK, ExitCode.INCOMPLETE), result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # each one parses
    events = [line["event"] for line in lines]
    assert events[0] == "job_submitted"
    assert "export_written" in events
    progress = [line for line in lines if line["event"] == "job_progress"]
    assert progress, events
    last = progress[-1]
    assert last["status"] == "finished"
    assert last["ended"] == last["total"] == 3
    assert last["received"] + last["cancelled"] + last["expired"] == 3
    assert last["budget"] == "20.00"
    assert last["message"].startswith("job 1: 3/3 ended: ")


def _stderr_on_a_terminal(orch: Orchestrator, *args: str) -> tuple[int, str]:
    """Run a command with its stderr on a pseudo-terminal; its exit code and what it drew."""
    main, side = pty.openpty()
    proc = subprocess.Popen(
        [*COMMAND, *args],
        cwd=orch.workdir,
        env=orch.environ(TERM="xterm", COLUMNS="120"),
        stdout=subprocess.PIPE,
        stderr=side,
    )
    os.close(side)
    drawn = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the other side closed: the command has ended
            break
        if not chunk:
            break
        drawn += chunk
    os.close(main)
    return proc.wait(30), drawn.decode(errors="replace")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_submit_shows_a_spinner_on_a_terminal_and_nothing_of_it_off_one(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    job = write_job(tmp_path, SMALL)

    code, drawn = _stderr_on_a_terminal(orchestrator, "submit", str(job))
    piped = orchestrator.run("submit", str(job), "--allow-overlap")

    assert code == ExitCode.OK, drawn
    assert f"submitting {job}" in drawn
    assert piped.returncode == ExitCode.OK, piped.stderr
    assert "submitting" not in piped.stderr


def test_the_summary_says_the_codes_beyond_a_target_beside_the_capped_count() -> None:
    """A quantity target of 4 numbers got 3 codes; a codes: 3 target got 4 (a number still
    waiting when it was met brought one): 6 of 7 wanted, and 7 received, which it says."""
    counts = dict.fromkeys(State, 0)
    counts |= {State.RECEIVED: 7, State.CANCELLED: 4}
    progress = Progress(
        JobStatus.FINISHED,
        counts,
        Decimal("12.05"),
        Decimal("20"),
        goals=((3, 4), (4, 3)),
        asks_codes=True,
    )

    assert progress.line().startswith("codes 6/7 (+1 beyond a target); 11/11 ended: 7 received")
    assert progress.codes_missing == 1
