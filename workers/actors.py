"""The actors: thin shells that run one lifecycle step per slot and send the nudges it asks for.

Messages carry slot ids only (several per message: see ``orchestrator.lifecycle.nudges``). The
database says what to do; a message delivered twice, late, or never changes nothing
(``sweep`` re-sends lost ones).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any

import dramatiq
import structlog

from orchestrator.config import load_settings
from orchestrator.lifecycle.nudges import Action, Nudge, pack
from orchestrator.lifecycle.purchase import Purchases, place
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.lifecycle.settle import cancel, check_many
from orchestrator.lifecycle.sweep import sweep
from orchestrator.lifecycle.wiring import make_runtime
from workers.broker import broker  # noqa: F401  (must be set before actors are declared)

log = structlog.get_logger(__name__)

# One queue per kind of work: Dramatiq consumes each queue on its own thread, so a backlog of
# polls never holds up a cancel that must reach the provider before the order expires.
QUEUES = {
    "cancel": "legitsms-cancel",
    "check": "legitsms-check",
    "place": "legitsms-place",
    "sweep": "legitsms-sweep",
}
RETRY: dict[str, Any] = {"max_retries": 8, "min_backoff": 1_000, "max_backoff": 60_000}

Step = Callable[[Runtime, int], list[Nudge]]

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


class StepsFailed(Exception):
    """Some slots of a message failed; Dramatiq retries it (the others drop out as done)."""


def runtime() -> Runtime:
    """This process's Runtime, built on first use (after any fork)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = make_runtime(load_settings(), os.environ["REDIS_URL"])
        return _runtime


def send(nudges: list[Nudge]) -> None:
    """Send the nudges as (possibly delayed) messages, packed several slots to a message."""
    for batch in pack(nudges):
        ACTORS[batch.action].send_with_options(
            args=(list(batch.activation_ids),), delay=max(0, int(batch.delay * 1000))
        )


def _run(
    step: Step, activation_ids: list[int], *, finish: Callable[[], list[Nudge]] = list
) -> None:
    """Run ``step`` for each slot, each on its own: one failing slot holds up no other.

    ``finish`` writes what the steps left owed, before their nudges are sent.
    """
    rt = runtime()
    name = getattr(step, "func", step).__name__  # a partial's own function
    nudges: list[Nudge] = []
    failed: list[int] = []
    for activation_id in activation_ids:
        # Worker threads are reused: start every slot from a clean logging context.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(activation_id=activation_id)
        try:
            nudges += step(rt, activation_id)
        except Exception:
            log.exception("step_failed", step=name)
            failed.append(activation_id)
    structlog.contextvars.clear_contextvars()
    try:
        nudges += finish()
    finally:
        send(nudges)  # the slots already written must go on, whatever finish() met
    if failed:
        # The retry repeats the whole message; the slots done meanwhile are no longer due.
        raise StepsFailed(f"{name} failed for slots {failed}")


# Under a busy worker, cancels before polls before new orders (lower runs first).
@dramatiq.actor(queue_name=QUEUES["cancel"], priority=0, **RETRY)
def cancel_orders(activation_ids: list[int]) -> None:
    """Cancel orders that got no code in time, for a refund."""
    _run(cancel, activation_ids)


@dramatiq.actor(queue_name=QUEUES["check"], priority=10, **RETRY)
def check_codes(activation_ids: list[int]) -> None:
    """Poll orders for their codes, reading and writing the database once for all of them."""
    structlog.contextvars.clear_contextvars()
    send(check_many(runtime(), activation_ids))


@dramatiq.actor(queue_name=QUEUES["place"], priority=20, **RETRY)
def place_orders(activation_ids: list[int]) -> None:
    """Buy the number for each slot, at most once."""
    purchases = Purchases(runtime(), activation_ids)  # one read for the message's slots
    _run(functools.partial(place, purchases=purchases), activation_ids, finish=purchases.finish)


@dramatiq.actor(queue_name=QUEUES["sweep"], priority=0, max_retries=0)
def sweep_all() -> None:
    """Re-drive every slot whose message was lost; end finished jobs."""
    structlog.contextvars.clear_contextvars()
    send(sweep(runtime()))


ACTORS: dict[Action, dramatiq.Actor[[list[int]], None]] = {
    Action.PLACE: place_orders,
    Action.CHECK: check_codes,
    Action.CANCEL: cancel_orders,
}
