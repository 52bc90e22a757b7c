"""Drive the real ``orchestrator`` command in subprocesses, as a user or cron would."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, inspect, text

from orchestrator.cli.watch import Progress, read_progress
from orchestrator.db.engine import make_engine
from orchestrator.db.models import JobStatus
from orchestrator.sandbox.config import DEMO_API_KEY
from orchestrator.sandbox.server import SandboxServer

COMMAND = [sys.executable, "-m", "orchestrator"]
_INHERITED_PREFIXES = ("LEGITSMS_", "ORCHESTRATOR_", "REDIS_URL", "DATABASE_URL")


@dataclass
class Orchestrator:
    """The CLI with a fixed environment and working folder; remembers what it started."""

    workdir: Path
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _engine: Engine | None = None

    def environ(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
        return {**base, **self.env, **extra}

    def run(
        self, *args: str, timeout: float = 120, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Run one command to its end; its output captured as text."""
        return subprocess.run(
            [*COMMAND, *args],
            cwd=self.workdir,
            env=self.environ(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_worker(
        self, *, threads: int = 8, log: Path | None = None, **extra: str
    ) -> subprocess.Popen[bytes]:
        """Start ``orchestrator worker`` (one process) in the background."""
        out = open(log or self.workdir / f"worker-{len(self.workers)}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [*COMMAND, "worker", "--processes", "1", "--threads", str(threads)],
            cwd=self.workdir,
            env=self.environ(**extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._engine is not None:
            self._engine.dispose()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.env["DATABASE_URL"])
        return self._engine

    def wait_for_job(self, job_id: int, *, timeout: float) -> Progress:
        """Poll the database until the job has ended; fail with its progress if it does not."""
        deadline = time.monotonic() + timeout
        progress = read_progress(self.engine, job_id)
        while progress.status is JobStatus.ACTIVE:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} still active after {timeout}s: {progress.line()}"
                )
            time.sleep(0.5)
            progress = read_progress(self.engine, job_id)
        return progress

    def export(self, job: str | int) -> list[dict[str, str]]:
        """Export through the CLI and read the CSV back."""
        path = self.workdir / f"export-{job}.csv"
        result = self.run("export", str(job), "--output", str(path))
        assert result.returncode == 0, result.stderr
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))


def fast_env(base_url: str, redis_url: str, database_url: str, home: Path) -> dict[str, str]:
    """Settings for a simulator that answers in seconds, with ``home/data`` as data folder."""
    return {
        "LEGITSMS_BASE_URL": base_url,
        "LEGITSMS_API_KEY": DEMO_API_KEY,
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "ORCHESTRATOR_DATA_DIR": str(home / "data"),
        "ORCHESTRATOR_RATE_LIMIT": "0",
        "ORCHESTRATOR_POLL_INTERVAL": "0.5s",
        "ORCHESTRATOR_CANCEL_MIN_AGE": "2s",
        "ORCHESTRATOR_PROVIDER_EXPIRY": "40s",
        "ORCHESTRATOR_EXPIRY_MARGIN": "10s",
        "ORCHESTRATOR_SWEEP_INTERVAL": "3s",
        "ORCHESTRATOR_READ_TIMEOUT": "3s",
        "ORCHESTRATOR_CONNECT_TIMEOUT": "2s",
    }


def wait_until(
    condition: Callable[[], bool],
    what: str = "the condition",
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
) -> None:
    """Return once ``condition()`` holds; fail naming ``what`` if it does not within ``timeout``
    seconds (a wait that runs out must fail here, not far from its cause)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {timeout}s: {what}")
        time.sleep(interval)


def write_job(folder: Path, body: str, name: str = "job.yaml") -> Path:
    """Write a job file and return its path."""
    path = folder / name
    path.write_text(body)
    return path


def submitted_job_id(stdout: str) -> int:
    """The id from ``submit``'s 'submitted job N (...)' line."""
    for word in stdout.split():
        if word.isdigit():
            return int(word)
    raise AssertionError(f"no job id in {stdout!r}")


def settled_ledger(sandbox: SandboxServer) -> list[dict[str, Any]]:
    """The simulator's orders once every one has had time to reach an end (its expiry)."""
    orders: list[dict[str, Any]] = sandbox.ledger.snapshot(time.time())["orders"]
    if orders:
        last = max(o["created_at"] for o in orders)
        time.sleep(max(0.0, last + sandbox.config.expiry + 0.5 - time.time()))
    settled: list[dict[str, Any]] = sandbox.ledger.snapshot(time.time())["orders"]
    return settled


def database_as_text(url: str) -> dict[str, str]:
    """Every table of the database, each row's repr on a line of its own."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                name: "\n".join(
                    repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{name}"'))
                )
                for name in inspect(conn).get_table_names()
            }
    finally:
        engine.dispose()
