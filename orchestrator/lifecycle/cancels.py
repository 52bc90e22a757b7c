"""When a bought order may and must be cancelled, and the start of its cancel: one rule each,
for every step that gives an order up (its timeout, a job cancel, a target met, the sweep)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from orchestrator.config import Settings
from orchestrator.db import store
from orchestrator.db.models import Activation, Job, State
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.runtime import Runtime

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

SKEW_SECONDS = 1.0  # send a cancel this long after the minimum age, for clock differences


def cancel_at(rt: Runtime, act: Activation, job: Job) -> datetime:
    """When a code-less order is given up: the job's timeout, within what the provider allows."""
    assert act.ordered_at is not None
    return act.ordered_at + timedelta(seconds=give_up_after(rt.settings, job.code_timeout))


def give_up_after(settings: Settings, code_timeout: float) -> float:
    """Seconds after its purchase that a code-less order of a job with ``code_timeout`` is
    given up: never before the provider allows a cancel, never too near its expiry."""
    return min(max(code_timeout, settings.cancel_min_age), settings.cancel_deadline)


def cancel_allowed_at(rt: Runtime, act: Activation) -> datetime:
    """The earliest moment the provider accepts a cancel of the order (with clock skew)."""
    assert act.ordered_at is not None
    return act.ordered_at + timedelta(seconds=rt.settings.cancel_min_age + SKEW_SECONDS)


def start_cancel(session: Session, rt: Runtime, act: Activation, reason: str) -> list[Nudge]:
    """Move a bought order to ``cancelling``; its cancel goes as soon as the provider allows."""
    assert act.id is not None
    delay = max(0.0, (cancel_allowed_at(rt, act) - rt.now()).total_seconds())
    moved = store.move(
        session,
        act,
        State.CANCELLING,
        event="cancel_due",
        cancel_reason=reason,
        next_action_at=rt.after(delay),
    )
    return [Nudge(Action.CANCEL, act.id, delay)] if moved else []
