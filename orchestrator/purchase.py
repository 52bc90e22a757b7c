"""Buy the number for one slot, at most once: claim and commit, then send ``POST /order`` once."""

from __future__ import annotations

import json
import random

import structlog
from sqlmodel import Session

from orchestrator import store
from orchestrator.db import reading, transaction
from orchestrator.errors import (
    NoStock,
    NotSent,
    ProviderError,
    ProviderRejected,
    RateLimited,
    Throttled,
)
from orchestrator.models import Activation, Job, State, Target
from orchestrator.money import from_micros, to_micros
from orchestrator.planner import Choice, choose_country
from orchestrator.provider import Order
from orchestrator.ratelimit import Priority
from orchestrator.runtime import Action, Nudge, Runtime, defer

log = structlog.get_logger(__name__)

MAX_UNSENT_ATTEMPTS = 12  # purchases that provably bought nothing before the slot gives up
UNRECORDED_CLAIM = "claimed but never recorded: the purchase may or may not have happened"
BUDGET_RECHECK_SECONDS = 10.0  # a refund elsewhere may free budget; look again this often


def place(rt: Runtime, activation_id: int) -> list[Nudge]:
    """Drive a planned slot to an order (or to its end); return the nudges to send next."""
    with reading(rt.engine) as session:
        act = store.get_activation(session, activation_id)
        if act is None:
            return []
        job = session.get(Job, act.job_id)
        target = session.get(Target, act.target_id)
        assert job is not None and target is not None
    if act.state is State.ORDERING:
        _expire_stale_claim(rt, act)
        return []
    if act.state is not State.PLANNED or not rt.is_due(act.next_action_at):
        return []  # a duplicate or stale message: the row says what to do, not the message
    if job.cancel_requested_at is not None:
        with transaction(rt.engine) as session:
            if store.move(session, act, State.FAILED, event="slot_dropped", error="job cancelled"):
                store.finish_job_if_done(session, act.job_id)
        return []
    countries = [(int(c), str(n)) for c, n in json.loads(target.countries)]

    try:
        prices = rt.prices.get(act.service_id)
    except Throttled as exc:
        return _later(rt, act, exc.retry_after, spread=True)
    except ProviderError as exc:
        log.warning("prices_unavailable", activation_id=act.id, error=str(exc))
        return _later(rt, act, rt.settings.poll_interval)

    choice = choose_country(countries, prices, from_micros(act.cap_micros))
    if not isinstance(choice, Choice):
        return _fail(rt, act, choice.reason, choice.detail)

    if rt.throttle is not None:
        try:
            rt.throttle.acquire(Priority.ORDER)
        except Throttled as exc:
            return _later(rt, act, exc.retry_after, spread=True)

    with transaction(rt.engine) as session:
        fresh = store.get_activation(session, activation_id)
        if fresh is None or fresh.state is not State.PLANNED:
            return []
        act = fresh
        claimed = store.claim(
            session,
            act,
            country_id=choice.country_id,
            country_name=choice.country_name,
            next_action_at=rt.after(rt.claim_lease),
            now=rt.now(),
        )
        if claimed is store.Claim.TAKEN:
            return []
        if claimed is store.Claim.NO_BUDGET:
            return _budget_refused(rt, session, act)
    # Committed: from here on the slot is ours, and any doubt about the POST keeps it so.
    return _send_order(rt, act, choice)


def _send_order(rt: Runtime, act: Activation, choice: Choice) -> list[Nudge]:
    try:
        order = rt.client.order(act.service_id, choice.country_id, slot_acquired=True)
    except NoStock:
        rt.prices.mark_out_of_stock(act.service_id, choice.country_id)
        return _unclaim(rt, act, delay=0.0, why="no_stock")
    except (NotSent, RateLimited) as exc:
        delay = exc.retry_after if isinstance(exc, RateLimited | Throttled) else 5.0
        return _unclaim(rt, act, delay=delay, why=type(exc).__name__)
    except ProviderRejected as exc:
        with transaction(rt.engine) as session:
            store.move(session, act, State.FAILED, event="order_refused", reserve=0, error=exc.code)
            store.finish_job_if_done(session, act.job_id)
        log.warning("order_refused", activation_id=act.id, code=exc.code)
        return []
    except ProviderError as exc:
        # It may have bought a number: hold the cap, never buy this slot again by ourselves.
        with transaction(rt.engine) as session:
            store.move(session, act, State.IN_DOUBT, event="order_in_doubt", error=str(exc))
            store.finish_job_if_done(session, act.job_id)
        log.error("order_in_doubt", activation_id=act.id, error=str(exc))
        return []
    log.info("order_placed", activation_id=act.id, order_id=order.order_id, cost=str(order.cost))
    return _record_order(rt, act, order)


def _record_order(rt: Runtime, act: Activation, order: Order) -> list[Nudge]:
    cost = to_micros(order.cost)
    now = rt.now()
    fields = {
        "order_id": order.order_id,
        "phone": order.phone,
        "cost_micros": cost,
        "ordered_at": now,
    }
    over_cap = cost > act.cap_micros
    # Read the arrival history before this transaction takes SQLite's write lock.
    wait = rt.poll_wait(act.service_id, act.country_id or 0, 0.0)
    with transaction(rt.engine) as session:
        if over_cap:
            first = rt.after(rt.settings.cancel_min_age)
            moved = store.move(
                session,
                act,
                State.CANCELLING,
                event="order_over_cap",
                expect={State.ORDERING, State.IN_DOUBT},
                reserve=cost,
                cancel_reason="over_cap",
                error=f"charged {order.cost} above the cap {from_micros(act.cap_micros)}",
                next_action_at=first,
                **fields,
            )
            nudge = Nudge(Action.CANCEL, act.id or 0, rt.settings.cancel_min_age)
        else:
            first = rt.after(wait)
            moved = store.move(
                session,
                act,
                State.WAITING,
                event="order_placed",
                expect={State.ORDERING, State.IN_DOUBT},
                reserve=cost,
                next_action_at=first,
                **fields,
            )
            nudge = Nudge(Action.CHECK, act.id or 0, wait)
    if not moved:
        # Only a human resolving the slot meanwhile can do this; the audit log must keep it.
        log.error("order_not_recorded", activation_id=act.id, order_id=order.order_id)
        return []
    return [nudge]


def _unclaim(rt: Runtime, act: Activation, *, delay: float, why: str) -> list[Nudge]:
    """Give back a slot whose POST provably bought nothing, to be tried again later."""
    attempts = act.attempts + 1
    with transaction(rt.engine) as session:
        if attempts >= MAX_UNSENT_ATTEMPTS:
            store.move(session, act, State.FAILED, event="order_gave_up", reserve=0, error=why)
            store.finish_job_if_done(session, act.job_id)
            return []
        store.move(
            session,
            act,
            State.PLANNED,
            event="order_not_sent",
            reserve=0,
            attempts=attempts,
            error=why,
            next_action_at=rt.after(delay),
        )
    return [Nudge(Action.PLACE, act.id or 0, delay)]


def _budget_refused(rt: Runtime, session: Session, act: Activation) -> list[Nudge]:
    job = session.get(Job, act.job_id)
    assert job is not None and act.id is not None
    if job.cancel_requested_at is None and store.has_live_reservations(
        session, act.job_id, besides=act.id
    ):
        store.reschedule(session, act, rt.after(BUDGET_RECHECK_SECONDS))
        return [Nudge(Action.PLACE, act.id, BUDGET_RECHECK_SECONDS)]
    reason = "job cancelled" if job.cancel_requested_at else "budget exhausted"
    store.move(session, act, State.FAILED, event="slot_dropped", error=reason)
    store.finish_job_if_done(session, act.job_id)
    return []


def _expire_stale_claim(rt: Runtime, act: Activation) -> None:
    """A claim older than the lease: its POST may have bought a number, so it is in doubt."""
    if act.claimed_at is None or act.claimed_at >= rt.after(-rt.claim_lease):
        return
    with transaction(rt.engine) as session:
        if store.move(session, act, State.IN_DOUBT, event="order_in_doubt", error=UNRECORDED_CLAIM):
            store.finish_job_if_done(session, act.job_id)


def _fail(rt: Runtime, act: Activation, reason: str, detail: str) -> list[Nudge]:
    with transaction(rt.engine) as session:
        store.move(session, act, State.FAILED, event="slot_dropped", error=f"{reason}: {detail}")
        store.finish_job_if_done(session, act.job_id)
    log.warning("slot_dropped", activation_id=act.id, reason=reason, detail=detail)
    return []


def _later(rt: Runtime, act: Activation, delay: float, *, spread: bool = False) -> list[Nudge]:
    if spread:
        # Throttled orders come back spread out, not all at the limiter's next free slot.
        delay *= 1 + random.random()
    return defer(rt, act, Action.PLACE, delay)
