"""``orchestrator worker --processes N`` supervises its workers as ``run`` does its own."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from orchestrator.db.models import State
from tests.running import descendants
from tests.support import COMMAND, Orchestrator, submitted_job_id, wait_until, write_job

pytestmark = pytest.mark.slow

JOB = """\
name: supervised
targets:
  - service: Telegram
    country: United Kingdom
    quantity: 4
    max_price: 2.00
"""


def _workers(supervisor: subprocess.Popen[bytes]) -> list[int]:
    """The worker processes under the supervisor (its direct children)."""
    found = descendants(supervisor.pid)
    return [pid for pid in found if _parent(pid) == supervisor.pid]


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(
    orchestrator: Orchestrator,
) -> None:
    log = (orchestrator.workdir / "supervisor.log").open("wb")
    supervisor = subprocess.Popen(
        [*COMMAND, "worker", "--processes", "2", "--threads", "2"],
        cwd=orchestrator.workdir,
        env=orchestrator.environ(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: len(_workers(supervisor)) == 2, "two worker processes")
        first = _workers(supervisor)
        os.kill(first[0], signal.SIGKILL)
        wait_until(
            lambda: len(_workers(supervisor)) == 2 and first[0] not in _workers(supervisor),
            "the killed worker replaced",
        )

        submitted = orchestrator.run("submit", str(write_job(orchestrator.workdir, JOB)))
        assert submitted.returncode == 0, submitted.stderr
        progress = orchestrator.wait_for_job(submitted_job_id(submitted.stdout), timeout=90)
        assert progress.counts[State.RECEIVED] == 4, progress.line()

        workers = _workers(supervisor)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
        gone = lambda: all(_parent(pid) is None for pid in workers)  # noqa: E731
        wait_until(gone, "every worker gone", timeout=5)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        log.close()
