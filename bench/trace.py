"""``orchestrator worker`` with counters, for diagnosis: ``python -m bench.trace worker ...``.

Wraps (without changing them) the lifecycle steps the actors run, the shared limiter's
``acquire``, the client's HTTP send and every database transaction; counts how often each
ran, how each acquire ended, the CPU (``time.thread_time``) and the wall time each took
(wall well above CPU is waiting: for a lock, the GIL, the network), and writes them
to ``$BENCH_TRACE_DIR/<pid>.json`` when the process exits. Worker CPU outside the steps is
Dramatiq's: fetching, acking and sending messages. The counts say how much of the CPU goes
to steps that end in "not yet" (a throttled poll, a refused order).
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_counts: Counter[str] = Counter()
_cpu: dict[str, float] = {}
_wall: dict[str, float] = {}
_lock = threading.Lock()


def _count(key: str) -> None:
    with _lock:
        _counts[key] += 1


def _add_cpu(key: str, seconds: float, wall: float | None = None) -> None:
    with _lock:
        _cpu[key] = _cpu.get(key, 0.0) + seconds
        if wall is not None:
            _wall[key] = _wall.get(key, 0.0) + wall


def _wrap_step(module: Any, name: str) -> None:
    step: Callable[..., list[Any]] = getattr(module, name)

    def counted(*args: Any, **kwargs: Any) -> list[Any]:
        _count(f"step {name}")
        start, began = time.thread_time(), time.perf_counter()
        try:
            nudges = step(*args, **kwargs)
        finally:
            _add_cpu(f"step {name}", time.thread_time() - start, time.perf_counter() - began)
        for nudge in nudges:
            _count(f"nudge {name} -> {nudge.action.value}")
        return nudges

    setattr(module, name, counted)


def _wrap_nudges(owner: Any, attr: str, name: str) -> None:
    """Count the nudges ``owner.attr`` returns as step ``name``'s."""
    function: Callable[..., list[Any]] = getattr(owner, attr)

    @functools.wraps(function)
    def counted(*args: Any, **kwargs: Any) -> list[Any]:
        nudges = function(*args, **kwargs)
        for nudge in nudges:
            _count(f"nudge {name} -> {nudge.action.value}")
        return nudges

    setattr(owner, attr, counted)


def _wrap_timed(owner: Any, name: str, key: str) -> None:
    function: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start, began = time.thread_time(), time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            _add_cpu(key, time.thread_time() - start, time.perf_counter() - began)

    setattr(owner, name, timed)


def _wrap_transactions(modules: list[Any]) -> None:
    from orchestrator.db import engine as db

    for name, key in (("transaction", "database writes"), ("reading", "database reads")):
        original = getattr(db, name)
        timed = _timed_session(original, key)
        for module in modules:
            if hasattr(module, name):
                setattr(module, name, timed)


def _timed_session(original: Any, key: str) -> Any:
    @contextmanager
    def timed(engine: Any) -> Iterator[Any]:
        _count(key)
        start, began = time.thread_time(), time.perf_counter()
        try:
            with original(engine) as session:
                yield session
        finally:
            _add_cpu(key, time.thread_time() - start, time.perf_counter() - began)

    return timed


def _wrap_limiter() -> None:
    from orchestrator.errors import Throttled
    from orchestrator.provider.ratelimit import Priority, SharedRateLimiter

    acquire = SharedRateLimiter.acquire

    def counted(self: SharedRateLimiter, priority: Priority) -> None:
        name = Priority(priority).name.lower()
        start, began = time.thread_time(), time.perf_counter()
        try:
            acquire(self, priority)
        except Throttled:
            _count(f"acquire {name} refused")
            raise
        finally:
            _add_cpu("rate limiter", time.thread_time() - start, time.perf_counter() - began)
        _count(f"acquire {name} granted")

    SharedRateLimiter.acquire = counted  # type: ignore[method-assign]


def _dump() -> None:
    folder = os.environ.get("BENCH_TRACE_DIR")
    if folder:
        with _lock:
            data = {"counts": dict(_counts), "cpu_seconds": dict(_cpu), "wall_seconds": dict(_wall)}
        Path(folder, f"{os.getpid()}.json").write_text(json.dumps(data, indent=1, sort_keys=True))


def main() -> None:
    """Install the counters, then run the ``orchestrator`` command line as usual."""
    from orchestrator.lifecycle import purchase, runtime, settle, sweep
    from orchestrator.provider.client import LegitSMSClient

    # The actors import these names late, after the broker is set: patched by then.
    _wrap_step(purchase, "place")
    _wrap_nudges(purchase.Purchases, "finish", "place")  # a message's purchases nudge at its end
    _wrap_step(settle, "check")
    _wrap_step(settle, "check_many")
    _wrap_step(settle, "cancel")
    _wrap_step(sweep, "sweep")
    _wrap_limiter()
    _wrap_timed(LegitSMSClient, "_send_once", "HTTP send (incl. rate limiter)")
    _wrap_transactions([purchase, runtime, settle, sweep])
    atexit.register(_dump)
    from orchestrator.cli.app import main as cli_main

    sys.argv[0] = "orchestrator"
    cli_main()


if __name__ == "__main__":
    main()
