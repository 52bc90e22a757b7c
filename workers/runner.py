"""Run Dramatiq worker threads in this process until SIGTERM or SIGINT."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from types import FrameType

import structlog

from orchestrator.jobrun import PARENT_ENV

log = structlog.get_logger(__name__)


def run_worker(*, threads: int, sweep_interval: float) -> int:
    """Consume the queue with ``threads`` threads until told to stop; returns an exit code."""
    import dramatiq

    from workers.actors import QUEUES, runtime
    from workers.broker import broker
    from workers.periodic import PeriodicSweep

    try:
        runtime()  # connect, migrate and load now: the first message should not pay for it
    except Exception as exc:  # the database may come up later: messages retry until it does
        log.warning("runtime_not_ready", error=str(exc))

    broker.add_middleware(PeriodicSweep(os.environ["REDIS_URL"], sweep_interval))
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
    if parent:  # started by `run`, in a session of its own: no terminal stops it if run dies
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
    parent's): a worker of a ``run`` that was killed must not work on alone, unwatched."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.warning("worker_orphaned", parent_pid=parent)
            stop.set()


def run_processes(count: int, argv: list[str]) -> int:
    """Run ``count`` worker processes (``argv`` each) and forward stop signals to them."""
    children = [subprocess.Popen(argv) for _ in range(count)]  # noqa: S603  (our own command)

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)


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
