"""Wallet checkpoints: the balance read at a quiet moment of the key, set against the ledger.

Between two checkpoints the wallet falls by what was charged, less what was refunded. The
ledger explains what it recorded in between; the rest is *unexplained*. In-doubt purchases
sent in the interval are what could explain it, and under ``exclusive_key`` (no one else
spends on the key) the checkpoint settles them (settle_in_doubt.py). A move of the wallet
with nothing in doubt to explain it means the key is not exclusive after all: settling stops,
loudly, until ``audit --resume-settling``.

A checkpoint is exact only when the key is quiet (provider/quiet.py) and every call that
could have moved the wallet is recorded: no claim unrecorded, no cancel of unknown effect, no
in-doubt purchase younger than ``in_doubt_grace`` (a slow provider may still charge it).
Otherwise no checkpoint is taken, and the next chance is tried.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.db import queries, store, wallet_ledger
from orchestrator.db.engine import reading, transaction
from orchestrator.db.models import WalletCheckpoint
from orchestrator.errors import Throttled
from orchestrator.lifecycle.nudges import Nudge
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.lifecycle.settle_in_doubt import Settlement, settle
from orchestrator.money import from_micros, shown, to_micros

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

log = structlog.get_logger(__name__)

DRAIN_SECONDS = 3.0  # how long a checkpoint holds new calls off while those in flight end
BACKOFF_SECONDS = 30.0  # a checkpoint that could not get quiet: the next waits this long
# An in-doubt purchase keeps its job open for a checkpoint this long past its grace at most:
# a key never quiet (other jobs always buying) must not keep a `run` waiting for ever.
SETTLE_PATIENCE = 600.0


@dataclass
class Taken:
    """What a checkpoint attempt came to."""

    checkpoint: WalletCheckpoint | None  # None: not taken (``why`` says why)
    why: str = ""
    nudges: list[Nudge] = field(default_factory=list)


def take(rt: Runtime, reason: str, *, resume_settling: bool = False, force: bool = False) -> Taken:
    """Take a checkpoint now if the key can be made quiet; settle what it can explain.

    ``force`` (``audit``): try even while checkpoints are put off.

    Raises ProviderError when the balance cannot be read.
    """
    gate = rt.quiet
    if gate is None:
        return Taken(None, "no shared gate (Redis) in this process")
    if gate.putting_off() and not force:
        return Taken(None, "put off: a checkpoint could not get quiet lately")
    # Looked at before holding anyone up: a hold that cannot succeed only delays cancels.
    blocked = _not_settled(rt)
    if blocked:
        return Taken(None, blocked)
    oldest = gate.oldest_call()
    if oldest is not None and oldest > DRAIN_SECONDS:
        gate.put_off(BACKOFF_SECONDS)
        return Taken(None, f"a call has been in flight {oldest:.0f} s")
    with gate.hold(drain=DRAIN_SECONDS) as until:
        if until is None:
            gate.put_off(BACKOFF_SECONDS)
            return Taken(None, "calls still in flight (or another checkpoint)")
        blocked = _not_settled(rt)
        if blocked:
            return Taken(None, blocked)
        balance = _read_balance(rt, until)  # a ProviderError is the caller's to report
        at = rt.now()
        if balance is None or time.monotonic() > until:
            return Taken(None, "the balance read outlasted the hold")
        with transaction(rt.engine) as session:
            taken = _record(rt, session, reason, at, balance, resume_settling)
    return taken


def _read_balance(rt: Runtime, until: float) -> int | None:
    """The balance, waiting for its turn under the rate limit while the hold lasts."""
    while True:
        try:
            return to_micros(rt.client.balance())
        except Throttled as exc:
            if time.monotonic() + exc.retry_after > until:
                return None
            time.sleep(exc.retry_after)


def _not_settled(rt: Runtime) -> str:
    """Why the ledger cannot be set against a balance read now ('' when it can)."""
    grace_start = rt.after(-rt.settings.in_doubt_grace)
    with reading(rt.engine) as session:
        calls = wallet_ledger.unsettled_calls(session)
        doubt = wallet_ledger.candidates(session, wallet_ledger.totals(session).in_doubt_ids)
        young = [
            c.activation_id
            for c in doubt
            if c.claimed_at is not None and c.claimed_at > grace_start
        ]
    if calls:
        return "unrecorded calls: " + ", ".join(f"{n} {kind}" for kind, n in calls.items())
    if young:
        return f"in-doubt purchases younger than in_doubt_grace: {young}"
    return ""


def _record(
    rt: Runtime,
    session: Session,
    reason: str,
    at: datetime,
    balance: int,
    resume_settling: bool,
) -> Taken:
    key = rt.key_fingerprint
    before = wallet_ledger.last_checkpoint(session, key)
    stopped = False if resume_settling else bool(before and before.settling_stopped)
    outcome: dict[str, Any] = {"first": before is None}
    nudges: list[Nudge] = []
    if before is not None and not resume_settling:
        result = _conclude(rt, session, before, at, balance, stopped)
        outcome, stopped, nudges = result.outcome, result.settling_stopped, result.nudges
    elif resume_settling:
        outcome["resumed_settling"] = True
    # The slots that waited for this checkpoint: tried now (settled or left), they no longer
    # hold their jobs open.
    pending = wallet_ledger.pending_settles(session)
    wallet_ledger.clear_pending(session, [act.id for act in pending if act.id is not None])
    for job_id in {act.job_id for act in pending}:
        store.finish_job_if_done(session, job_id)
    ledger = wallet_ledger.totals(session)  # after settling: what the next interval starts from
    row = wallet_ledger.add_checkpoint(
        session,
        key=key,
        at=at,
        reason=reason,
        balance_micros=balance,
        ledger=ledger,
        outcome=outcome,
        settling_stopped=stopped,
    )
    unexplained = int(outcome.get("unexplained_micros", 0))
    # Quiet when all adds up; a line worth reading when money moved unexplained or settled.
    settled = outcome.get("settled")
    say = log.info if settled else log.warning if unexplained else log.debug
    say(
        "wallet_checkpoint",
        reason=reason,
        balance=_dollars(balance),
        unexplained=_dollars(unexplained),
        settled=outcome.get("settled", {}),
    )
    return Taken(row, nudges=nudges)


@dataclass(frozen=True)
class Conclusion:
    outcome: dict[str, Any]
    settling_stopped: bool
    nudges: list[Nudge]


def _conclude(
    rt: Runtime,
    session: Session,
    before: WalletCheckpoint,
    at: datetime,
    balance: int,
    stopped: bool,
) -> Conclusion:
    """Set the interval since ``before`` against the ledger; settle what it explains."""
    moved = wallet_ledger.movement(session, before.at, at)
    fell = before.balance_micros - balance
    unexplained = fell - moved.explained_micros
    earlier = set(json.loads(before.in_doubt_ids))
    now_in_doubt = wallet_ledger.totals(session).in_doubt_ids
    doubt = wallet_ledger.candidates(session, [i for i in now_in_doubt if i not in earlier])
    outcome: dict[str, Any] = {
        "fell_micros": fell,
        "charged_micros": moved.charged_micros,
        "refunded_micros": moved.refunded_micros,
        "unexplained_micros": unexplained,
        "in_doubt": [c.activation_id for c in doubt],
    }
    if moved.unknown_cost_ids:
        outcome["cannot_settle"] = (
            f"bought at a cost not known: slots {list(moved.unknown_cost_ids)}"
        )
        return Conclusion(outcome, stopped, [])
    foreign = _foreign(unexplained, doubt)
    if foreign:
        outcome["not_exclusive"] = foreign
        if rt.settings.exclusive_key and not stopped:
            log.error("settling_stopped", why=foreign, unexplained=_dollars(unexplained))
        return Conclusion(outcome, stopped or rt.settings.exclusive_key, [])
    if not doubt:
        return Conclusion(outcome, stopped, [])
    if not rt.settings.exclusive_key:
        outcome["cannot_settle"] = "exclusive_key is off: audit only reports"
        return Conclusion(outcome, stopped, [])
    if stopped:
        outcome["cannot_settle"] = "settling stopped: see audit"
        return Conclusion(outcome, stopped, [])
    result: Settlement = settle(rt, session, doubt, unexplained)
    outcome.update(result.outcome)
    return Conclusion(outcome, stopped, result.nudges)


def _foreign(unexplained: int, doubt: list[wallet_ledger.Candidate]) -> str:
    """Why the unexplained movement cannot come from the in-doubt purchases ('' if it may)."""
    if unexplained < 0:
        return f"the wallet rose by {_dollars(-unexplained)} more than the refunds recorded"
    if unexplained > 0 and not doubt:
        return f"the wallet fell by {_dollars(unexplained)} with nothing in doubt"
    most = sum(c.cost_micros if c.cost_micros is not None else c.cap_micros for c in doubt)
    if unexplained > most:
        return f"the wallet fell by {_dollars(unexplained)}, more than every purchase in doubt"
    return ""


def due(rt: Runtime) -> str | None:
    """Why a checkpoint should be taken now (None: not needed)."""
    with reading(rt.engine) as session:
        last = wallet_ledger.last_checkpoint(session, rt.key_fingerprint)
        if wallet_ledger.pending_settles(session):
            return "in_doubt"
        if last is None:
            return "first" if queries.active_job_ids(session) else None
        changed = queries.jobs_changed_since(session, last.at)
        if changed:
            return changed
        stale = last.at < rt.after(-rt.settings.checkpoint_interval)
        return "interval" if stale and queries.active_job_ids(session) else None


def when_due(rt: Runtime) -> list[Nudge]:
    """Take a checkpoint if one is due (the sweep calls this); the nudges settling asks for."""
    _give_up_waiting(rt)
    reason = due(rt)
    if reason is None:
        return []
    taken = take(rt, reason)
    if taken.checkpoint is None:
        log.debug("wallet_checkpoint_put_off", reason=reason, why=taken.why)
    return taken.nudges


def _dollars(micros: int) -> str:
    return shown(from_micros(micros))


def _give_up_waiting(rt: Runtime) -> None:
    """In-doubt purchases that waited SETTLE_PATIENCE for a checkpoint stay in doubt (for
    ``audit`` and ``resolve``) and no longer hold their jobs open."""
    oldest = rt.after(-(rt.settings.in_doubt_grace + SETTLE_PATIENCE))
    with transaction(rt.engine) as session:
        stale = [
            act
            for act in wallet_ledger.pending_settles(session)
            if act.finished_at is not None and act.finished_at < oldest and act.id is not None
        ]
        if not stale:
            return
        wallet_ledger.clear_pending(session, [act.id for act in stale if act.id is not None])
        for job_id in {act.job_id for act in stale}:
            store.finish_job_if_done(session, job_id)
    log.warning("settle_given_up", slots=[act.id for act in stale], why="no quiet checkpoint")
