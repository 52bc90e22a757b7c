"""Worker processes: run Dramatiq threads in this one until SIGTERM or SIGINT, or supervise
several (``orchestrator worker --processes N``, and the local workers of ``orchestrator run``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import structlog

from orchestrator.logs import CONSOLE_ENV

if TYPE_CHECKING:
    from workers.metrics_server import MetricsServer

log = structlog.get_logger(__name__)

PARENT_ENV = "ORCHESTRATOR_RUN_PID"  # set for supervised workers: they stop when it is gone


def run_worker(*, threads: int, sweep_interval: float) -> int:
    """Consume the queue with ``threads`` threads until told to stop; returns an exit code."""
    import dramatiq

    from workers.actors import QUEUES, runtime
    from workers.broker import broker
    from workers.metrics_server import count_messages
    from workers.periodic import PeriodicSweep

    try:
        runtime()  # connect, migrate and load now: the first message should not pay for it
    except Exception as exc:  # the database may come up later: messages retry until it does
        log.warning("runtime_not_ready", error=str(exc))

    broker.add_middleware(PeriodicSweep(os.environ["REDIS_URL"], sweep_interval))
    count_messages(broker)  # when a supervisor serves /metrics for this process
    worker = dramatiq.Worker(
        broker, queues=set(QUEUES.values()), worker_threads=threads, worker_timeout=1000
    )
    # Take from a queue only what a thread can start now (Dramatiq's default is twice that): a
    # message holds several purchases that wait on the shared rate limit, and one hoarded by a
    # busy host is one another host's idle threads could have been working on.
    worker.queue_prefetch = threads
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.environ.get(PARENT_ENV)
    if parent:  # supervised, in a session of its own: no terminal stops it if its parent dies
        threading.Thread(
            target=_stop_when_orphaned, args=(int(parent), stop), name="parent-watch", daemon=True
        ).start()
    worker.start()
    log.info("worker_started", pid=os.getpid(), threads=threads)
    stop.wait()
    log.info("worker_stopping", pid=os.getpid())
    worker.stop(timeout=10_000)
    return 0


def _stop_when_orphaned(parent: int, stop: threading.Event) -> None:
    """Set ``stop`` once the process that started this one is gone (its pid is no longer our
    parent's): a worker whose ``run`` or supervisor was killed must not work on alone."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.warning("worker_orphaned", parent_pid=parent)
            stop.set()


def run_processes(count: int, argv: list[str], metrics: MetricsServer | None = None) -> int:
    """Run ``count`` worker processes (``argv`` each), restarting any that dies, until SIGTERM
    or SIGINT; then stop them all and return the worst exit code. With ``metrics``, their
    metrics are served there."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env = dict(os.environ)
    workers = LocalWorkers(
        argv,
        count,
        env if metrics is None else metrics.worker_env(env),
        on_exit=None if metrics is None else metrics.process_gone,
    )
    while not stop.wait(1.0):
        workers.keep_alive()
    return workers.stop()


def worker_argv(threads: int) -> list[str]:
    """The command line of one worker process of this installation."""
    return [
        sys.executable,
        "-m",
        "orchestrator",
        "worker",
        "--processes",
        "1",
        "--threads",
        str(threads),
    ]


class LocalWorkers:
    """Worker processes started on this machine (by ``run``, or ``worker --processes N``),
    restarted if one dies.

    Each runs in a session of its own: a terminal's Ctrl-C reaches the supervisor only, which
    decides when they stop; and each stops on its own if the supervisor dies (PARENT_ENV).
    With ``on_line``, their output is read here and handed over line by line (so a live
    progress bar can print it above itself); without, they write to our stderr directly.
    ``on_exit`` is told the pid of each that ended (a metrics server forgets it).
    """

    def __init__(
        self,
        argv: list[str],
        count: int,
        env: dict[str, str],
        *,
        on_line: Callable[[str], None] | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self._argv = argv
        self._env = {**env, PARENT_ENV: str(os.getpid())}
        self._on_line = on_line
        self._on_exit = on_exit
        self._children = [self._spawn() for _ in range(count)]

    def _spawn(self) -> subprocess.Popen[bytes]:
        if self._on_line is None:
            return subprocess.Popen(  # noqa: S603  (our own command)
                self._argv, env=self._env, start_new_session=True
            )
        child = subprocess.Popen(  # noqa: S603  (our own command)
            self._argv,
            env=self._env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
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
                self._ended(child)
                self._children[i] = self._spawn()

    def _ended(self, child: subprocess.Popen[bytes]) -> None:
        if self._on_exit is not None:
            self._on_exit(child.pid)

    def stop(self, timeout: float = 20.0) -> int:
        """Ask each to stop (SIGTERM), kill any still running after ``timeout`` seconds;
        returns the worst exit code."""
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
            self._ended(child)
        return max((child.returncode for child in self._children), default=0)


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
