"""Re-drive every unfinished slot whose nudge was lost (worker killed, Redis flushed)."""

from __future__ import annotations

from datetime import timedelta

import structlog
from sqlmodel import Session

from orchestrator import store
from orchestrator.db import transaction
from orchestrator.models import State
from orchestrator.purchase import UNRECORDED_CLAIM
from orchestrator.runtime import Action, Nudge, Runtime
from orchestrator.settle import SKEW_SECONDS

log = structlog.get_logger(__name__)

BATCH = 2000  # slots looked at per sweep; the next sweep takes the rest
ACTIONS = {
    State.PLANNED: Action.PLACE,
    State.WAITING: Action.CHECK,
    State.CANCELLING: Action.CANCEL,
}


def sweep(rt: Runtime) -> list[Nudge]:
    """One pass over the database; returns the nudges to send (re-sent ones are harmless)."""
    nudges: list[Nudge] = []
    # A nudge overdue by a whole interval is lost, not late; config.py keeps two intervals
    # inside the expiry margin, so a lost cancel is re-sent before the provider's expiry.
    grace = rt.settings.sweep_interval
    with transaction(rt.engine) as session:
        nudges += _apply_job_cancels(rt, session)
        for act in store.overdue(session, before=rt.after(-grace), limit=BATCH):
            assert act.id is not None
            if act.state is State.ORDERING:
                if act.claimed_at is not None and act.claimed_at < rt.after(-rt.claim_lease):
                    store.move(
                        session,
                        act,
                        State.IN_DOUBT,
                        event="order_in_doubt",
                        error=UNRECORDED_CLAIM,
                    )
                continue
            action = ACTIONS.get(act.state)
            if action is None:
                continue
            # Due now: the re-sent nudge acts; a late original finding it done is dropped.
            store.reschedule(session, act, rt.now())
            nudges.append(Nudge(action, act.id))
        for job_id in store.active_job_ids(session):
            store.finish_job_if_done(session, job_id)
    if nudges:
        log.info("sweep_redrove", count=len(nudges))
    return nudges


def _apply_job_cancels(rt: Runtime, session: Session) -> list[Nudge]:
    """Slots of cancelled jobs: drop the unbought ones, cancel the bought ones."""
    nudges: list[Nudge] = []
    for act in store.cancelled_job_slots(session, limit=BATCH):
        assert act.id is not None
        if act.state is State.PLANNED:
            store.move(session, act, State.FAILED, event="slot_dropped", error="job cancelled")
            continue
        assert act.ordered_at is not None
        allowed_at = act.ordered_at + timedelta(seconds=rt.settings.cancel_min_age + SKEW_SECONDS)
        delay = max(0.0, (allowed_at - rt.now()).total_seconds())
        if store.move(
            session,
            act,
            State.CANCELLING,
            event="cancel_due",
            cancel_reason="job_cancelled",
            next_action_at=rt.after(delay),
        ):
            nudges.append(Nudge(Action.CANCEL, act.id, delay))
    return nudges
