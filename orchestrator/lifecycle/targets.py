"""Codes targets (``codes: N``): keep enough numbers in flight to get N codes, and stop the
rest once they came.

Called in the transaction that ended a slot, so a slot's end and its replacement are one
step: no crash between them can lose a replacement or plan one twice. The job's row is
locked first (``store.lock_job``): two slots of a job ending at once plan in turn, the
second seeing the first's slots.

In flight (planned, being bought, waiting, or in doubt: an in-doubt purchase may hold a
number) is kept at ``ceil(codes missing / estimated success rate)`` (estimate.py), never past
``max_numbers`` slots for the target, nor past what the budget can still reserve at the cap.
A slot that ended because no allowed country could be bought, or because of the budget or a
job cancel, is not replaced: its replacement would meet the same wall.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.db import queries, store
from orchestrator.db.models import Activation, State, Target
from orchestrator.lifecycle.cancels import start_cancel
from orchestrator.lifecycle.estimate import numbers_in_flight
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.planner import rank_countries
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.money import from_micros

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

log = structlog.get_logger(__name__)

NOT_NEEDED = "not needed: the target has its codes"
IN_FLIGHT = (State.PLANNED, State.ORDERING, State.WAITING, State.IN_DOUBT)


def end_slot(
    rt: Runtime,
    session: Session,
    act: Activation,
    to: State,
    event: str,
    *,
    replace: bool = True,
    **values: Any,
) -> list[Nudge]:
    """Move the slot to a final state, then steer its target and end its job (below);
    ``replace``: a codes target may plan another number in its place."""
    if to is State.IN_DOUBT and rt.settings.exclusive_key:
        values.setdefault("settle_pending", True)  # a wallet checkpoint may settle it
    if store.move(session, act, to, event=event, **values):
        return after_slot_ended(rt, session, act, replace=replace)
    return []


def after_slot_ended(
    rt: Runtime, session: Session, act: Activation, *, replace: bool = True
) -> list[Nudge]:
    """Steer the slot's codes target (if it is one), then end the job if nothing is live."""
    nudges: list[Nudge] = []
    if act.target_id not in rt.quantity_targets:
        target = session.get(Target, act.target_id)
        if target is not None and target.codes_wanted is not None:
            nudges = steer(rt, session, target, replace=replace)
        elif target is not None:
            rt.quantity_targets.add(act.target_id)
    store.finish_job_if_done(session, act.job_id)
    return nudges


def steer(rt: Runtime, session: Session, target: Target, *, replace: bool = True) -> list[Nudge]:
    """Top the target's numbers in flight up, or stop them once it has its codes."""
    assert target.id is not None and target.codes_wanted is not None
    job = store.lock_job(session, target.job_id)
    tally = queries.target_state_tally(session, target.id)
    missing = target.codes_wanted - tally[State.RECEIVED]
    if missing <= 0:
        return _stop_the_rest(rt, session, target)
    if not replace or job.cancel_requested_at is not None:
        return []
    planned = sum(tally.values())
    wanted = numbers_in_flight(missing, _expected_rate(rt, target))
    more = min(wanted - sum(tally[s] for s in IN_FLIGHT), target.quantity - planned)
    if job.budget_micros is not None:
        more = min(more, (job.budget_micros - job.reserved_micros) // target.max_price_micros)
    if more <= 0:
        return []
    ids = store.add_slots(session, target, more)
    log.info(
        "numbers_added",
        job_id=target.job_id,
        target=target.position,
        added=more,
        codes_missing=missing,
        planned=planned + more,
    )
    return [Nudge(Action.PLACE, slot_id) for slot_id in ids]


def _stop_the_rest(rt: Runtime, session: Session, target: Target) -> list[Nudge]:
    """The target has its codes: drop its slots not yet bought, cancel those still waiting.

    A slot being bought right now is left to its purchase; its first poll sees the target
    met and cancels it (settle.py).
    """
    nudges: list[Nudge] = []
    for act in queries.live_slots_of_target(session, target.id or 0):
        if act.state is State.PLANNED:
            store.move(session, act, State.FAILED, event="slot_dropped", error=NOT_NEEDED)
        elif act.state is State.WAITING:
            nudges += start_cancel(session, rt, act, "target_met")
    return nudges


def _expected_rate(rt: Runtime, target: Target) -> float:
    """The estimated success rate of the country the next purchase would choose; 1.0 (as
    many numbers as codes missing, the cautious side) when no live price is at hand."""
    prices = rt.prices.cached(target.service_id)
    if prices is None:
        return 1.0
    countries = [(int(c), str(n)) for c, n in json.loads(target.countries)]
    outcomes = rt.outcomes(target.service_id)
    ranked, _ = rank_countries(countries, prices, from_micros(target.max_price_micros), outcomes)
    return ranked[0].rate if ranked else 1.0
