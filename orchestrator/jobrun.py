"""What ``orchestrator run`` does between submitting and exporting: local workers and the wait."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from pathlib import Path

import structlog
from sqlalchemy import Engine

from orchestrator import store
from orchestrator.db import transaction
from orchestrator.logs import CONSOLE_ENV
from orchestrator.models import FINAL_STATES, JobStatus, State
from orchestrator.money import from_micros

log = structlog.get_logger(__name__)


class ExitCode(IntEnum):
    """What ``orchestrator`` exits with; documented in the README."""

    OK = 0  # every number got its code (or the command did what it said)
    INCOMPLETE = 1  # the job ended, and some numbers got no code (cancelled, expired, failed)
    BAD_INPUT = 2  # a job file, setting or argument is wrong; nothing was bought
    IN_DOUBT = 3  # some purchases have an unknown outcome: see `orchestrator resolve`
    OVERLAP = 4  # a job with this name is still active (cron overlap); nothing was submitted
    UNAVAILABLE = 5  # the provider, Redis or the database could not be used
    INTERRUPTED = 130  # stopped by Ctrl-C or SIGTERM; the job goes on with the next workers


@dataclass(frozen=True)
class Progress:
    """A job's counts, for the progress line and the summary."""

    status: JobStatus
    counts: dict[State, int]
    spend: Decimal
    budget: Decimal | None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ended(self) -> int:
        return sum(n for state, n in self.counts.items() if state in FINAL_STATES)

    def line(self) -> str:
        c = self.counts
        budget = f" of {self.budget}" if self.budget is not None else ""
        return (
            f"{self.ended}/{self.total} ended: {c[State.RECEIVED]} received, "
            f"{c[State.WAITING]} waiting, {c[State.CANCELLED]} cancelled, "
            f"{c[State.EXPIRED]} expired, {c[State.FAILED]} failed, {c[State.IN_DOUBT]} in doubt; "
            f"spent {self.spend}{budget}"
        )

    def exit_code(self) -> ExitCode:
        if self.counts[State.IN_DOUBT]:
            return ExitCode.IN_DOUBT
        if self.counts[State.RECEIVED] == self.total:
            return ExitCode.OK
        return ExitCode.INCOMPLETE


def read_progress(engine: Engine, job_id: int) -> Progress:
    """The job's current counts and spend."""
    with transaction(engine) as session:
        job = store.get_job(session, job_id)
        return Progress(
            status=job.status,
            counts=store.state_counts(session, job_id),
            spend=from_micros(store.spend_micros(session, job_id)),
            budget=from_micros(job.budget_micros) if job.budget_micros is not None else None,
        )


class LocalWorkers:
    """Worker processes started by ``run`` on this machine, restarted if one dies.

    With ``on_line``, their output is read here and handed over line by line (so a live
    progress bar can print it above itself); without, they write to our stderr directly.
    """

    def __init__(
        self,
        argv: list[str],
        count: int,
        env: dict[str, str],
        *,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        self._argv = argv
        self._env = env
        self._on_line = on_line
        self._children = [self._spawn() for _ in range(count)]

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self._on_line is None:
            return subprocess.Popen(self._argv, env=self._env)  # noqa: S603  (our own command)
        child = subprocess.Popen(  # noqa: S603  (our own command)
            self._argv, env=self._env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        threading.Thread(target=self._forward, args=(child,), daemon=True).start()
        return child

    def _forward(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None and self._on_line is not None
        for raw in child.stdout:  # ends when the child exits and its pipe closes
            self._on_line(raw.decode("utf-8", "replace").rstrip("\n"))

    def keep_alive(self) -> None:
        for i, child in enumerate(self._children):
            if child.poll() is not None:
                log.warning("worker_restarted", exit_code=child.returncode)
                self._children[i] = self._spawn()

    def stop(self, timeout: float = 20.0) -> None:
        for child in self._children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self._children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_for_job(
    engine: Engine,
    job_id: int,
    *,
    on_progress: Callable[[Progress], None],
    tick: Callable[[], None] = lambda: None,
    interval: float = 1.0,
) -> Progress:
    """Block until every slot of the job has ended, reporting progress each ``interval``."""
    while True:
        progress = read_progress(engine, job_id)
        on_progress(progress)
        if progress.status is not JobStatus.ACTIVE:
            return progress
        tick()
        time.sleep(interval)


def child_env(
    redis_url: str,
    *,
    log_level: str | None = None,
    config: Path | None = None,
    console_logs: bool = False,
) -> dict[str, str]:
    """The environment for worker processes: ours, with the broker they must share, and the
    settings file, log level and log format ``run`` was given (a worker has no other way to
    learn them: its command line carries none)."""
    env = {**os.environ, "REDIS_URL": redis_url}
    if log_level is not None:
        env["ORCHESTRATOR_LOG_LEVEL"] = log_level
    if config is not None:
        env["ORCHESTRATOR_CONFIG"] = str(config.resolve())
    if console_logs:
        env[CONSOLE_ENV] = "1"
    return env
