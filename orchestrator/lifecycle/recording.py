"""What one ``POST /order`` came to, written on its slot: the number waiting for its code, or
bought unusable (or over the cap) and to be cancelled for a refund, or in doubt when the
provider's answer contradicts what is recorded."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.db import queries, store
from orchestrator.db.engine import savepoint
from orchestrator.db.errors import IntegrityError
from orchestrator.db.models import Activation, Job, State
from orchestrator.errors import UnpricedOrder, UnusableOrder
from orchestrator.lifecycle.cancels import cancel_at, give_up_after
from orchestrator.lifecycle.nudges import Action, Nudge, Write
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.lifecycle.targets import end_slot
from orchestrator.money import from_micros, shown, to_micros
from orchestrator.provider.types import Order
from orchestrator.redact import mask

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

log = structlog.get_logger(__name__)


def record_order(rt: Runtime, act: Activation, job: Job, order: Order) -> Write:
    cost = to_micros(order.cost)
    ordered_at = rt.now()
    fields = {
        "order_id": order.order_id,
        "phone": order.phone,
        "cost_micros": cost,
        "ordered_at": ordered_at,
        "code_after": ordered_at,  # no code yet: a poll that finds one learns it came since
    }
    if cost > act.cap_micros:
        error = f"charged {shown(order.cost)} above the cap {shown(from_micros(act.cap_micros))}"
        return record_for_cancel(rt, act, "order_over_cap", "over_cap", error, cost, fields)
    # Read the arrival history now, not in the transaction that holds SQLite's write lock.
    give_up = give_up_after(rt.settings, job.code_timeout)
    wait = rt.poll_wait(act.service_id, act.country_id or 0, 0.0, give_up=give_up)
    # The first check, like every later one, comes no later than the order's cancel time:
    # with a long poll_interval a short code_timeout would be cancelled late, and an order
    # could even expire (unrefunded) before its first look.
    read_at, act.ordered_at = act.ordered_at, ordered_at
    try:
        deadline = cancel_at(rt, act, job)
    finally:
        act.ordered_at = read_at  # the write sets it, if the slot is still ours
    due = min(ordered_at + timedelta(seconds=wait), deadline)

    def write(session: Session) -> list[Nudge]:
        delay = max(0.0, (due - rt.now()).total_seconds())
        moved = _move_order(
            rt,
            session,
            act,
            State.WAITING,
            event="order_placed",
            reserve=cost,
            next_action_at=rt.after(delay),
            **fields,
        )
        return [Nudge(Action.CHECK, act.id or 0, delay)] if moved else []

    return write


def record_unusable(rt: Runtime, act: Activation, exc: UnusableOrder) -> Write:
    """Record an order answered with an unusable cost or phone, to be cancelled for a refund.

    An unknown cost is stored as unknown (NULL) and held at the cap, as an in-doubt slot is.
    """
    cost = None if exc.cost is None else to_micros(exc.cost)
    fields = {
        "order_id": exc.order_id,
        "phone": exc.phone,
        "cost_micros": cost,
        "ordered_at": rt.now(),
    }
    reason = "unusable_cost" if isinstance(exc, UnpricedOrder) else "unusable_answer"
    reserve = act.cap_micros if cost is None else cost
    return record_for_cancel(rt, act, f"order_{reason}", reason, str(exc), reserve, fields)


def record_for_cancel(
    rt: Runtime,
    act: Activation,
    event: str,
    reason: str,
    error: str,
    reserve: int,
    fields: dict[str, Any],
) -> Write:
    """Record a bought order that must be cancelled as soon as the provider allows."""

    def write(session: Session) -> list[Nudge]:
        nudge = Nudge(Action.CANCEL, act.id or 0, rt.settings.cancel_min_age)
        moved = _move_order(
            rt,
            session,
            act,
            State.CANCELLING,
            event=event,
            reserve=reserve,
            cancel_reason=reason,
            error=error,
            next_action_at=rt.after(nudge.delay),
            **fields,
        )
        return [nudge] if moved else []

    return write


def _move_order(rt: Runtime, session: Session, act: Activation, to: State, **values: Any) -> bool:
    """Record the order ``order_id`` on the slot; a slot answered an id another slot holds
    is in doubt instead (the provider contradicted itself; a human decides). An in-doubt
    slot stays in flight for its target (targets.py), so its end plans nothing to nudge."""
    order_id = str(values["order_id"])
    if mask(order_id) != order_id:
        # The id holds the API key (a provider echoing it): it may not be stored (rule 10),
        # and masked it would name no order. Bought, but not ours to poll or cancel: a human
        # decides, as for any purchase in doubt.
        log.error("order_id_holds_secret", activation_id=act.id)
        error = "the provider answered an order_id holding the API key; see its dashboard"
        end_slot(rt, session, act, State.IN_DOUBT, "order_in_doubt", error=error)
        return False
    try:
        # The unique index on order_id is the check (a query first cost every purchase a
        # read, a tenth of its CPU in bench (a), for an answer that never comes). A savepoint:
        # a write it refuses undoes this slot's write only, not the transaction's other work
        # (the next slot's claim).
        with savepoint(session):
            moved = store.move(session, act, to, expect={State.ORDERING, State.IN_DOUBT}, **values)
    except IntegrityError:
        other = queries.slot_holding_order(session, order_id)
    else:
        if not moved:
            # Only a human resolving the slot meanwhile can do this; the audit log keeps it.
            log.error("order_not_recorded", activation_id=act.id, order_id=order_id)
        return moved
    held = f"slot {other}" if other is not None else "another slot"
    error = f"the provider answered order_id {order_id}, already recorded for {held}"
    log.error("order_id_reused", activation_id=act.id, order_id=order_id, other_slot=other)
    end_slot(rt, session, act, State.IN_DOUBT, "order_in_doubt", error=error)
    return False
