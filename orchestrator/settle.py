"""Bring a bought order to its end: poll for the code, and cancel for a refund when none comes."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlmodel import Session

from orchestrator import store
from orchestrator.db import transaction
from orchestrator.errors import (
    CancelFailed,
    CannotCancel,
    NotFound,
    NotSent,
    ProviderError,
    RateLimited,
    Throttled,
)
from orchestrator.models import Activation, Job, State
from orchestrator.runtime import Action, Nudge, Runtime, defer

log = structlog.get_logger(__name__)

CANCEL_RETRY_SECONDS = 15.0  # after a refusal, ask again this much later (the provider's pace)
SKEW_SECONDS = 1.0  # send a cancel this long after the minimum age, for clock differences


def check(rt: Runtime, activation_id: int) -> list[Nudge]:
    """Poll a waiting order once; store its code, or schedule the next poll or the cancel."""
    with transaction(rt.engine) as session:
        act = store.get_activation(session, activation_id)
        if act is None or act.state is not State.WAITING or not rt.is_due(act.next_action_at):
            return []
        job = session.get(Job, act.job_id)
        assert job is not None and act.order_id is not None
        deadline = cancel_at(rt, act, job)
        if job.cancel_requested_at is not None:
            return _start_cancel(rt, session, act, "job_cancelled")
        if rt.now() >= deadline:
            return _start_cancel(rt, session, act, "timeout")

    try:
        status = rt.client.status(act.order_id)
    except Throttled as exc:
        # Polls that lost the race for a slot come back spread over a poll interval, not all
        # at the next free slot: a spinning poll would crowd out the cancels that matter more.
        wait = max(exc.retry_after, _poll_wait(rt, act)) * (1 + random.random())
        return defer(rt, act, Action.CHECK, _until(rt, deadline, wait))
    except NotFound:
        return _end(
            rt, act, State.EXPIRED, "order_vanished", error="the provider no longer knows it"
        )
    except ProviderError as exc:
        log.warning("poll_failed", activation_id=act.id, error=str(exc))
        return defer(rt, act, Action.CHECK, _until(rt, deadline, rt.settings.poll_interval))
    if status.code is not None:
        return _store_code(rt, act, status.code)
    return defer(rt, act, Action.CHECK, _until(rt, deadline, _poll_wait(rt, act)))


def _poll_wait(rt: Runtime, act: Activation) -> float:
    assert act.ordered_at is not None and act.country_id is not None
    age = (rt.now() - act.ordered_at).total_seconds()
    return rt.poll_wait(act.service_id, act.country_id, age)


def cancel(rt: Runtime, activation_id: int) -> list[Nudge]:
    """Ask the provider to cancel and refund an order; reconcile any refusal through /status."""
    with transaction(rt.engine) as session:
        act = store.get_activation(session, activation_id)
        if act is None or act.state is not State.CANCELLING:
            return []
        if not rt.is_due(act.next_action_at):
            return []
        assert act.order_id is not None and act.ordered_at is not None
    allowed_at = act.ordered_at + timedelta(seconds=rt.settings.cancel_min_age + SKEW_SECONDS)
    if rt.now() < allowed_at:
        return defer(rt, act, Action.CANCEL, (allowed_at - rt.now()).total_seconds())

    earlier_unknown = act.cancel_sent_at is not None
    with transaction(rt.engine) as session:
        if not store.mark_cancel_sent(session, act, rt.now()):
            return []
    try:
        rt.client.cancel(act.order_id)
    except CannotCancel:
        return _reconcile(rt, act, replayed=False)
    except CancelFailed as exc:
        return _reconcile(rt, act, replayed=exc.replayed or earlier_unknown)
    except NotFound:
        return _end(
            rt, act, State.EXPIRED, "order_vanished", error="the provider no longer knows it"
        )
    except (NotSent, RateLimited) as exc:
        delay = exc.retry_after if isinstance(exc, RateLimited | Throttled) else 1.0
        return _refused(rt, act, str(exc), delay=delay, sent=earlier_unknown)
    except ProviderError as exc:
        log.warning("cancel_unanswered", activation_id=act.id, error=str(exc))
        return _refused(rt, act, str(exc), sent=True)
    log.info("order_cancelled", activation_id=act.id, order_id=act.order_id)
    return _end(rt, act, State.CANCELLED, "order_cancelled", reserve=0)


def cancel_at(rt: Runtime, act: Activation, job: Job) -> datetime:
    """When a code-less order is given up: the job's timeout, within what the provider allows."""
    assert act.ordered_at is not None
    s = rt.settings
    wait = min(max(job.code_timeout, s.cancel_min_age), s.cancel_deadline)
    return act.ordered_at + timedelta(seconds=wait)


def _reconcile(rt: Runtime, act: Activation, *, replayed: bool) -> list[Nudge]:
    """A refused cancel: read /status rather than guess what became of the order."""
    assert act.order_id is not None
    try:
        status = rt.client.status(act.order_id)
    except Throttled as exc:
        return defer(rt, act, Action.CANCEL, exc.retry_after)
    except NotFound:
        return _end(
            rt, act, State.EXPIRED, "order_vanished", error="the provider no longer knows it"
        )
    except ProviderError as exc:
        return _refused(rt, act, str(exc), sent=replayed)
    if status.code is not None:
        return _store_code(rt, act, status.code)
    if replayed:
        # Our first cancel went through but its answer was lost; the replay met its effect.
        return _end(rt, act, State.CANCELLED, "order_cancelled", reserve=0)
    if _past_expiry(rt, act):
        return _end(rt, act, State.EXPIRED, "order_expired", error="expired before a cancel took")
    return _refused(rt, act, "cancel refused; order still waiting")


def _refused(
    rt: Runtime, act: Activation, why: str, *, delay: float | None = None, sent: bool = False
) -> list[Nudge]:
    """Try the cancel again later; ``sent`` keeps the mark that an earlier one may have acted."""
    if _past_expiry(rt, act):
        return _end(rt, act, State.EXPIRED, "order_expired", error=f"never cancelled: {why}")
    assert act.ordered_at is not None
    expiry = act.ordered_at + timedelta(seconds=rt.settings.provider_expiry)
    if delay is None:
        delay = max(1.0, min(CANCEL_RETRY_SECONDS, (expiry - rt.now()).total_seconds() / 2))
    with transaction(rt.engine) as session:
        store.move(
            session,
            act,
            State.CANCELLING,
            event="cancel_refused",
            cancel_attempts=act.cancel_attempts + 1,
            cancel_sent_at=act.cancel_sent_at if sent else None,
            error=why,
            next_action_at=rt.after(delay),
        )
    assert act.id is not None
    return [Nudge(Action.CANCEL, act.id, delay)]


def _start_cancel(rt: Runtime, session: Session, act: Activation, reason: str) -> list[Nudge]:
    assert act.ordered_at is not None and act.id is not None
    allowed_at = act.ordered_at + timedelta(seconds=rt.settings.cancel_min_age + SKEW_SECONDS)
    delay = max(0.0, (allowed_at - rt.now()).total_seconds())
    moved = store.move(
        session,
        act,
        State.CANCELLING,
        event="cancel_due",
        cancel_reason=reason,
        next_action_at=rt.after(delay),
    )
    return [Nudge(Action.CANCEL, act.id, delay)] if moved else []


def _store_code(rt: Runtime, act: Activation, code: str) -> list[Nudge]:
    log.info("code_received", activation_id=act.id, order_id=act.order_id)
    return _end(rt, act, State.RECEIVED, "code_received", code=code, code_at=rt.now())


def _end(
    rt: Runtime,
    act: Activation,
    to: State,
    event: str,
    reserve: int | None = None,
    **values: Any,
) -> list[Nudge]:
    with transaction(rt.engine) as session:
        if store.move(session, act, to, event=event, reserve=reserve, **values):
            store.finish_job_if_done(session, act.job_id)
    return []


def _past_expiry(rt: Runtime, act: Activation) -> bool:
    assert act.ordered_at is not None
    return rt.now() >= act.ordered_at + timedelta(seconds=rt.settings.provider_expiry)


def _until(rt: Runtime, deadline: datetime, seconds: float) -> float:
    """``seconds``, but no later than the deadline (so the cancel is never late)."""
    return max(0.0, min(seconds, (deadline - rt.now()).total_seconds()))
