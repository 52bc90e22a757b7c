"""Re-drive every unfinished slot whose nudge was lost (worker killed, Redis flushed)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import structlog

from orchestrator.db import queries, store
from orchestrator.db.engine import transaction
from orchestrator.db.models import Activation, Job, State
from orchestrator.lifecycle import checkpoint
from orchestrator.lifecycle.cancels import cancel_at, start_cancel
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.purchase import claim_expired, expire_claim
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.lifecycle.settle import cancel, check

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

log = structlog.get_logger(__name__)

BATCH = 2000  # slots looked at per sweep; the next sweep takes the rest
MAX_INLINE_CANCELS = 100  # overdue cancels the sweep sends itself; the rest go as nudges
INLINE_THREADS = 16  # how many of those it sends at once (they mostly wait: network, limit)
ACTIONS = {
    State.PLANNED: Action.PLACE,
    State.WAITING: Action.CHECK,
    State.CANCELLING: Action.CANCEL,
}


def sweep(rt: Runtime) -> list[Nudge]:
    """One pass over the database; returns the nudges to send (re-sent ones are harmless).

    Overdue cancels, and polls whose order is already due for cancelling, are not handed
    back to the broker that lost or delayed them: the sweep runs them itself, since a refund
    missed before the provider's expiry is money lost.
    """
    nudges: list[Nudge] = []
    urgent: list[Activation] = []
    # A nudge overdue by a whole interval is lost, not late; config.py keeps two intervals
    # inside the expiry margin, so a lost cancel is re-sent before the provider's expiry.
    grace = rt.settings.sweep_interval
    with transaction(rt.engine) as session:
        nudges += _apply_job_cancels(rt, session)
        for act in queries.overdue(session, before=rt.after(-grace), limit=BATCH):
            assert act.id is not None
            if act.state is State.ORDERING:
                if claim_expired(rt, act):
                    nudges += expire_claim(rt, session, act)
                continue
            action = ACTIONS.get(act.state)
            if action is None:
                continue
            # Due now: the re-sent nudge acts; a late original finding it done is dropped.
            store.reschedule(session, act, rt.now())
            if _urgent(rt, session, act) and len(urgent) < MAX_INLINE_CANCELS:
                urgent.append(act)
            else:
                nudges.append(Nudge(action, act.id))
        for job_id in queries.active_job_ids(session):
            store.finish_job_if_done(session, job_id)
    if nudges or urgent:
        log.info("sweep_redrove", nudges=len(nudges), cancels=len(urgent))
    # In parallel, and each on its own: one slow or failing cancel (tenacity retries, a busy
    # rate limit, Redis restarting) must not hold up the rest until they expire. The oldest
    # orders, nearest the provider's expiry, go first: a sweep cut short (its worker killed)
    # has then settled those that could least wait for the next one.
    urgent.sort(key=lambda act: (act.ordered_at is None, act.ordered_at))
    with ThreadPoolExecutor(max_workers=INLINE_THREADS) as pool:
        for later in pool.map(lambda act: _settle_safely(rt, act.id or 0), urgent):
            nudges += later
    try:
        nudges += checkpoint.when_due(rt)  # the wallet, at job starts and ends, and in doubt
    except Exception as exc:  # the next sweep tries again
        log.warning("wallet_checkpoint_failed", error=str(exc))
    return nudges


def _settle_safely(rt: Runtime, activation_id: int) -> list[Nudge]:
    try:
        return _settle_now(rt, activation_id)
    except Exception as exc:  # the next sweep tries again; the others go on now
        log.warning("sweep_settle_failed", activation_id=activation_id, error=str(exc))
        return []


def _urgent(rt: Runtime, session: Session, act: Activation) -> bool:
    """A cancel that is due, or a poll whose order should already be cancelled."""
    if act.state is State.CANCELLING:
        return True
    if act.state is not State.WAITING:
        return False
    job = session.get(Job, act.job_id)
    assert job is not None
    return rt.now() >= cancel_at(rt, act, job)


def _settle_now(rt: Runtime, activation_id: int) -> list[Nudge]:
    """Poll or cancel in this thread; a cancel that follows at once is sent here too."""
    later: list[Nudge] = []
    # A waiting order's check moves it to cancelling and asks for the cancel; a row already
    # cancelling gets nothing from check, so its cancel is asked for here.
    for nudge in check(rt, activation_id) or [Nudge(Action.CANCEL, activation_id)]:
        if nudge.action is Action.CANCEL and nudge.delay <= 0:
            later += cancel(rt, activation_id)
        else:
            later.append(nudge)
    return later


def _apply_job_cancels(rt: Runtime, session: Session) -> list[Nudge]:
    """Slots of cancelled jobs: drop the unbought ones, cancel the bought ones."""
    nudges: list[Nudge] = []
    for act in queries.cancelled_job_slots(session, limit=BATCH):
        assert act.id is not None
        if act.state is State.PLANNED:
            store.move(session, act, State.FAILED, event="slot_dropped", error="job cancelled")
            continue
        nudges += start_cancel(session, rt, act, "job_cancelled")
    return nudges
