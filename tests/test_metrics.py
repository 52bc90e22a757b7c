"""``worker --metrics-port``: a real worker's /metrics over HTTP, during and after a job, shows
the money the database holds, the provider's 429s and latency as the simulator saw them, and
dramatiq's own metrics, summed over the worker processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.db import queries
from orchestrator.db.engine import reading
from orchestrator.db.models import JobStatus, State
from orchestrator.money import from_micros
from orchestrator.sandbox.server import SandboxServer
from tests.conftest import FAST_PROVIDER
from tests.running import Run
from tests.support import (
    COMMAND,
    Orchestrator,
    submitted_job_id,
    wait_until,
    write_job,
)

pytestmark = pytest.mark.slow

JOB = """\
name: watched
code_timeout: 4s
targets:
  - service: Telegram
    country: United Kingdom
    quantity: 8
    max_price: 2.00
"""


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """The fast simulator, answering one request in ten with a 429."""
    from dataclasses import replace

    with SandboxServer(replace(FAST_PROVIDER, fault_429=0.1)) as server:
        yield server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_scraped_worker_shows_the_money_the_database_holds(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    submitted = orchestrator.run("submit", str(write_job(tmp_path, JOB)))
    assert submitted.returncode == 0, submitted.stderr
    job = str(submitted_job_id(submitted.stdout))
    before_workers = len(sandbox.ledger.requests())  # the rest are the workers' requests

    port = _free_port()
    scratch = tmp_path / "tmp"  # the metrics folder goes here, and must be gone at the end
    scratch.mkdir()
    log = (tmp_path / "supervisor.log").open("wb")
    supervisor = subprocess.Popen(
        [*COMMAND, "worker", "--processes", "2", "--threads", "2", "--metrics-port", str(port)],
        cwd=tmp_path,
        env=orchestrator.environ(TMPDIR=str(scratch)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        during: list[list[Sample]] = []

        def scraped_while_active() -> bool:
            try:
                samples = _scrape(port)
            except OSError:
                return False  # not listening yet
            with reading(orchestrator.engine) as session:
                active = queries.get_job(session, job).status is JobStatus.ACTIVE
            if active and _total(samples, "orchestrator_numbers", job_id=job, state="waiting"):
                during.append(samples)
            return bool(during) or not active

        wait_until(scraped_while_active, "a scrape while numbers wait", timeout=30)
        assert during, "the job ended before any scrape saw a number waiting"
        assert _total(during[0], "orchestrator_numbers", job_id=job) == 8

        orchestrator.wait_for_job(int(job), timeout=60)
        samples = _scrape(port)
        with reading(orchestrator.engine) as session:
            counts = queries.state_counts(session, int(job))
            spent = queries.spend_micros(session, int(job))
            rows = queries.export_rows(session, [int(job)])
        refunded = sum(a.cost_micros or 0 for _, _, a in rows if a.state is State.CANCELLED)
        totals = sandbox.ledger.snapshot(0)["totals"]

        # The money gauges are the database's figures, and the provider's.
        for state, count in counts.items():
            shown = _total(samples, "orchestrator_numbers", job_id=job, state=state.value)
            assert shown == count, state
        assert _total(samples, "orchestrator_numbers", job_name="watched", country="") == 0
        assert (
            _total(samples, "orchestrator_codes_received_total", job_id=job)
            == counts[State.RECEIVED]
            > 0
        )
        assert counts[State.CANCELLED] > 0, "some codes never came"
        spend = _total(samples, "orchestrator_spend_dollars", job_id=job, service="Telegram")
        assert spend == float(from_micros(spent)) == float(totals["net_spend"])
        refunds = _total(samples, "orchestrator_refunds_dollars", job_id=job)
        assert refunds == float(from_micros(refunded)) == float(totals["refunded"]) > 0
        assert _total(samples, "orchestrator_in_doubt_dollars", job_id=job) == 0
        assert _total(samples, "orchestrator_refund_at_risk_dollars") == 0
        assert _total(samples, "orchestrator_database_up") == 1

        # The counters of both worker processes, summed, are what the simulator saw.
        seen = sandbox.ledger.requests()[before_workers:]
        by_endpoint = Counter(endpoint.split()[1].strip("/") for _, endpoint, _ in seen)
        limited = Counter(endpoint.split()[1].strip("/") for _, endpoint, st in seen if st == 429)
        assert sum(limited.values()) > 0, "the simulator answered some 429s"
        for name, count in by_endpoint.items():
            timed = _total(samples, "orchestrator_provider_request_seconds_count", endpoint=name)
            assert timed == count, name
            refused = _total(samples, "orchestrator_provider_429_total", endpoint=name)
            assert refused == limited[name], name
        held = _total(samples, "orchestrator_ratelimit_wait_seconds_total") + _total(
            samples, "orchestrator_ratelimit_deferred_total"
        )
        assert held > 0, "a 429 pauses every caller on the key"

        # dramatiq's own metrics, from the same port.
        assert _total(samples, "dramatiq_messages_total", actor_name="place_orders") >= 1
        assert _total(samples, "dramatiq_message_duration_milliseconds_count") >= 1

        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
        assert list(scratch.iterdir()) == [], "the metrics folder is removed"
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        log.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_run_serves_its_workers_metrics_while_it_runs(
    orchestrator: Orchestrator, tmp_path: Path
) -> None:
    port = _free_port()
    job_file = write_job(tmp_path, JOB.replace("quantity: 8", "quantity: 3"))
    run = Run.start(orchestrator, str(job_file), "--workers", "1", "--metrics-port", str(port))
    try:
        seen: list[list[Sample]] = []

        def placed() -> bool:
            try:
                samples = _scrape(port)
            except OSError:
                return False
            seen.append(samples)
            return _total(samples, "dramatiq_messages_total", actor_name="place_orders") >= 1

        run.wait_until(placed, "its worker's messages counted at /metrics")
        assert _total(seen[-1], "orchestrator_numbers", job_name="watched") == 3
        assert run.wait(60) in (ExitCode.OK, ExitCode.INCOMPLETE), run.err()
        with pytest.raises(OSError):
            _scrape(port)  # gone with the run
        assert run.left_behind() == {}
    finally:
        if run.proc.poll() is None:
            run.kill()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_metrics_port_in_use_is_refused_before_anything_is_bought(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    job_file = write_job(tmp_path, JOB)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = orchestrator.run("run", str(job_file), "--metrics-port", port)
    assert result.returncode == ExitCode.BAD_INPUT
    assert result.stderr.strip().splitlines() == [
        f"error: --metrics-port {port} cannot be used on 127.0.0.1: Address already in use"
    ]
    assert sandbox.ledger.snapshot(0)["orders"] == []
    assert orchestrator.run("status", "watched").returncode == ExitCode.BAD_INPUT, "no job"

    result = orchestrator.run("worker", "--metrics-port", "70000")
    assert result.returncode == ExitCode.BAD_INPUT
    assert "--metrics-port must be a port from 1 to 65535, got 70000" in result.stderr
