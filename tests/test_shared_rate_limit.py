"""Two worker processes share one rate limit, measured where it matters: at the provider (rule 6).

The simulator logs the moment each API request reaches it. Two ``orchestrator worker``
processes on one Redis and one database work a job together; from that log, no window of
time holds more requests than the configured rate allows, and after a 429 nothing from
either process arrives until its Retry-After has passed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from unittest.mock import patch

import pytest

from orchestrator.lifecycle.wiring import worker_max_wait
from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.server import SandboxServer
from orchestrator.sandbox.simulator import Headers, Reply, Simulator
from tests.support import Orchestrator, submitted_job_id, write_job

pytestmark = [pytest.mark.slow, pytest.mark.serial]

RATE = 4.0  # requests per second, for both processes together
WINDOWS = (1.0, 2.0, 5.0)
PROVIDER = SandboxConfig(
    seed=3,
    code_delay=(0.2, 2.0),
    never_ratio=0.1,
    cancel_min_age=2.0,
    expiry=40.0,
)
RETRY_AFTER = 3  # seconds; the simulator's own 429s say 1, inside what booked slots may use
# A slot booked just before the 429 arrived may still be sent: its caller sleeps at most
# the limiter's max_wait for it. Beyond that (and a little latency) nothing may arrive.
BOOKED_GRACE = worker_max_wait(RATE) + 0.1

JOB = """\
name: shared-limit
code_timeout: 4s
targets:
  - service: Telegram
    country: United Kingdom
    quantity: {telegram}
    max_price: 2.00
  - service: 924
    countries: [16, 1]
    quantity: {tiktok}
    max_price: 0.50
"""

Request = tuple[float, str, int]


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """SQLite only: the limit lives in Redis, whatever the database (the end-to-end tests run
    workers on PostgreSQL); running both would double the slowest tests of the suite."""
    return sqlite_url


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """The simulator, quick to send codes and with no rate limit of its own."""
    with SandboxServer(PROVIDER) as server:
        yield server


def test_two_worker_processes_together_never_exceed_the_configured_rate(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    logs = _work_a_job_with_two_workers(orchestrator, tmp_path, telegram=15, tiktok=15)

    requests = sandbox.ledger.requests()
    assert len(requests) > 60, "enough traffic to saturate the limit"
    _assert_within_rate(requests)
    _assert_both_worked(logs)


def test_a_429_pauses_every_process_until_its_retry_after_has_passed(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    sandbox.simulator.config = replace(PROVIDER, fault_429=0.04)
    with _retry_after(sandbox.simulator, RETRY_AFTER):
        logs = _work_a_job_with_two_workers(orchestrator, tmp_path, telegram=10, tiktok=10)

    requests = sandbox.ledger.requests()
    refusals = [at for at, _endpoint, status in requests if status == 429]
    assert refusals, "the simulator refused some requests"
    resumed = 0
    for refused_at in refusals:
        paused = [
            (round(at - refused_at, 3), endpoint)
            for at, endpoint, _status in requests
            if refused_at + BOOKED_GRACE <= at < refused_at + RETRY_AFTER
        ]
        assert not paused, f"requests arrived during the pause after the 429 at {refused_at}"
        # Work waited for the pause to end rather than having run out: the gap means something.
        after = [at for at, _, _ in requests if at >= refused_at + RETRY_AFTER]
        resumed += bool(after) and after[0] < refused_at + RETRY_AFTER + 1.0
    assert resumed, "work resumed right after some pause, so the job was busy during it"
    _assert_within_rate(requests)
    _assert_both_worked(logs)
    assert any("provider_rate_limited" in log for log in logs), "a worker saw the 429"


def _work_a_job_with_two_workers(
    orchestrator: Orchestrator, tmp_path: Path, *, telegram: int, tiktok: int
) -> list[str]:
    """Start two workers on one limit, submit the job, wait for it to end; their logs."""
    orchestrator.env["ORCHESTRATOR_RATE_LIMIT"] = str(RATE)
    workers = [orchestrator.start_worker(threads=8) for _ in range(2)]
    job_file = write_job(tmp_path, JOB.format(telegram=telegram, tiktok=tiktok))
    submitted = orchestrator.run("submit", str(job_file))
    assert submitted.returncode == 0, submitted.stderr
    progress = orchestrator.wait_for_job(submitted_job_id(submitted.stdout), timeout=50)
    assert progress.total == telegram + tiktok
    assert all(proc.poll() is None for proc in workers), "both workers still running"
    orchestrator.stop_all()
    return [(tmp_path / f"worker-{n}.log").read_text() for n in range(len(workers))]


def _assert_within_rate(requests: list[Request]) -> None:
    times = sorted(at for at, _endpoint, _status in requests)
    for width in WINDOWS:
        limit = math.ceil(width * RATE) + 1
        busiest = _busiest_window(times, width)
        assert busiest <= limit, f"{busiest} requests in {width:g}s; at most {limit} allowed"


def _busiest_window(times: list[float], width: float) -> int:
    """The most requests in any window [t, t + width) that starts at a request."""
    most, end = 0, 0
    for start, at in enumerate(times):
        while end < len(times) and times[end] < at + width:
            end += 1
        most = max(most, end - start)
    return most


def _assert_both_worked(logs: list[str]) -> None:
    placed = [log.count('"order_placed"') for log in logs]
    assert all(placed), f"orders placed per worker process: {placed}"


@contextmanager
def _retry_after(simulator: Simulator, seconds: int) -> Iterator[None]:
    """Make every 429 of ``simulator`` ask for ``seconds`` before the next request."""
    handle = simulator.handle

    def handle_with_retry_after(method: str, target: str, body: bytes, headers: Headers) -> Reply:
        reply = handle(method, target, body, headers)
        return replace(reply, retry_after=seconds) if reply.status == 429 else reply

    with patch.object(simulator, "handle", handle_with_retry_after):
        yield
