"""The actors: thin shells that run one lifecycle step and send the nudges it asks for.

Messages carry only a slot id. The database says what to do; a message delivered twice,
late, or never changes nothing (``sweep`` re-sends lost ones).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import dramatiq
import structlog

from orchestrator.config import load_settings
from orchestrator.purchase import place
from orchestrator.runtime import Action, Nudge, Runtime
from orchestrator.settle import cancel, check
from orchestrator.sweep import sweep
from orchestrator.wiring import make_runtime
from workers.broker import broker  # noqa: F401  (must be set before actors are declared)

# One queue per kind of work: Dramatiq consumes each queue on its own thread, so a backlog of
# polls never holds up a cancel that must reach the provider before the order expires.
QUEUES = {
    "cancel": "legitsms-cancel",
    "check": "legitsms-check",
    "place": "legitsms-place",
    "sweep": "legitsms-sweep",
}
RETRY: dict[str, Any] = {"max_retries": 8, "min_backoff": 1_000, "max_backoff": 60_000}

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def runtime() -> Runtime:
    """This process's Runtime, built on first use (after any fork)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = make_runtime(load_settings(), os.environ["REDIS_URL"])
        return _runtime


def send(nudges: list[Nudge]) -> None:
    """Send each nudge as a (possibly delayed) message to its actor."""
    for nudge in nudges:
        ACTORS[nudge.action].send_with_options(
            args=(nudge.activation_id,), delay=max(0, int(nudge.delay * 1000))
        )


def _bind(activation_id: int | None) -> None:
    # Worker threads are reused: start every message from a clean logging context.
    structlog.contextvars.clear_contextvars()
    if activation_id is not None:
        structlog.contextvars.bind_contextvars(activation_id=activation_id)


# Under a busy worker, cancels before polls before new orders (lower runs first).
@dramatiq.actor(queue_name=QUEUES["cancel"], priority=0, **RETRY)
def cancel_order(activation_id: int) -> None:
    """Cancel an order that got no code in time, for a refund."""
    _bind(activation_id)
    send(cancel(runtime(), activation_id))


@dramatiq.actor(queue_name=QUEUES["check"], priority=10, **RETRY)
def check_code(activation_id: int) -> None:
    """Poll one order for its code."""
    _bind(activation_id)
    send(check(runtime(), activation_id))


@dramatiq.actor(queue_name=QUEUES["place"], priority=20, **RETRY)
def place_order(activation_id: int) -> None:
    """Buy the number for one slot, at most once."""
    _bind(activation_id)
    send(place(runtime(), activation_id))


@dramatiq.actor(queue_name=QUEUES["sweep"], priority=0, max_retries=0)
def sweep_all() -> None:
    """Re-drive every slot whose message was lost; end finished jobs."""
    _bind(None)
    send(sweep(runtime()))


ACTORS: dict[Action, dramatiq.Actor[[int], None]] = {
    Action.PLACE: place_order,
    Action.CHECK: check_code,
    Action.CANCEL: cancel_order,
}
