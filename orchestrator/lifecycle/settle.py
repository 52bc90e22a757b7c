"""Bring a bought order to its end: poll for the code, and cancel for a refund when none comes."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.db import queries, store
from orchestrator.db.engine import reading, transaction
from orchestrator.db.models import Activation, CancelAnswer, Job, State, Target
from orchestrator.errors import (
    CancelFailed,
    CannotCancel,
    NotFound,
    NotSent,
    ProviderError,
    RateLimited,
    Throttled,
)
from orchestrator.lifecycle.cancels import (
    SKEW_SECONDS,
    cancel_allowed_at,
    cancel_at,
    give_up_after,
    start_cancel,
)
from orchestrator.lifecycle.nudges import Action, Nudge, Write
from orchestrator.lifecycle.polling import NO_MORE, POLL_SHARE
from orchestrator.lifecycle.runtime import Runtime, defer
from orchestrator.lifecycle.slot_log import about, logged
from orchestrator.lifecycle.targets import end_slot
from orchestrator.provider.quiet import HELD_RETRY
from orchestrator.provider.ratelimit import Priority

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

log = structlog.get_logger(__name__)

CANCEL_PACE = 15.0  # after a refusal and a read showing no code, cancel again this much later
CANCEL_PACE_MAX = 120.0  # ...doubling with each refusal, up to this (see _cancel_pace)
LOST_ANSWER_PACE = 2.0  # after a cancel whose answer was lost (not refused), cancel again soon
RETRY_SHARE = 0.25  # of the rate limit that cancels sent again (and their reads) plan to use
READ_RETRY_SECONDS = 5.0  # a reconciling read that got no usable answer is tried this much later


def check(rt: Runtime, activation_id: int) -> list[Nudge]:
    """Poll one waiting order (see :func:`check_many`)."""
    return check_many(rt, [activation_id])


def check_many(rt: Runtime, activation_ids: list[int]) -> list[Nudge]:
    """Poll waiting orders once each; store codes, or schedule next polls or cancels.

    One read and one write transaction serve them all: what each poll found is applied as
    its own compare-and-set, so a slot another worker moved meanwhile is left alone.
    """
    with reading(rt.engine) as session:
        acts = queries.get_activations(session, activation_ids)
        jobs = queries.get_jobs(session, {act.job_id for act in acts})
        targets = queries.get_targets(session, {act.target_id for act in acts})
        met = _targets_met(session, targets)
    pace = _Pace(rt.settings.rate_limit)
    writes: list[Write] = []
    for act in acts:
        if act.state is not State.WAITING or not rt.is_due(act.next_action_at):
            continue
        job, target = jobs[act.job_id], targets.get(act.target_id)
        with about(act, job, target):
            write = _poll_safely(rt, act, job, pace, target_met=act.target_id in met)
        writes.append(logged(write, act, job, target))
    nudges: list[Nudge] = []
    if writes:
        with transaction(rt.engine) as session:
            for write in writes:
                nudges += write(session)
    return nudges


class _Pace:
    """Spreads the polls of one message that the rate limit turns away over its next slots.

    Once one poll is refused the rest of the message would be too: they are not sent, but
    come back one after another, a poll's share of the limit apart, from when it has room.
    """

    def __init__(self, rate: float) -> None:
        self._spacing = 1 / (rate * POLL_SHARE) if rate > 0 else 0.0
        self._busy_for: float | None = None
        self._turned_away = 0

    @property
    def busy(self) -> bool:
        return self._busy_for is not None

    def refused(self, retry_after: float) -> None:
        if self._busy_for is None:
            self._busy_for = retry_after

    def wait(self) -> float:
        """How long the next poll turned away waits (jittered, so workers do not collide)."""
        assert self._busy_for is not None
        self._turned_away += 1
        return self._busy_for + self._spacing * (self._turned_away - 1 + random.random())


def _targets_met(session: Session, targets: dict[int, Target]) -> set[int]:
    """Which of these targets are codes targets that have all their codes."""
    wanted = {t: row.codes_wanted for t, row in targets.items() if row.codes_wanted is not None}
    received = queries.received_by_target(session, set(wanted))
    return {t for t, codes in wanted.items() if received.get(t, 0) >= codes}


def _poll_safely(
    rt: Runtime, act: Activation, job: Job, pace: _Pace, *, target_met: bool = False
) -> Write:
    """Poll one order; a failure of its own is retried later without losing the others'."""
    try:
        return _poll(rt, act, job, pace, target_met=target_met)
    except Exception:
        log.exception("poll_failed", activation_id=act.id)
        return _later(rt, act, _until(rt, cancel_at(rt, act, job), rt.settings.poll_interval))


def _poll(rt: Runtime, act: Activation, job: Job, pace: _Pace, *, target_met: bool) -> Write:
    """Poll one order (unless it is due for cancelling); return what to write of it."""
    assert act.order_id is not None
    deadline = cancel_at(rt, act, job)
    if job.cancel_requested_at is not None:
        return lambda session: start_cancel(session, rt, act, "job_cancelled")
    if target_met:  # bought while the target's last code came: not needed, so refunded
        return lambda session: start_cancel(session, rt, act, "target_met")
    if rt.now() >= deadline:
        return lambda session: start_cancel(session, rt, act, "timeout")
    if pace.busy:
        return _later(rt, act, _until(rt, deadline, pace.wait()))
    if rt.settings.rate_limit > 0 and (wait := _poll_wait(rt, act, job)) >= NO_MORE:
        # Planned when the model was younger (a look past its slowest code), this poll is
        # one it no longer plans: the tail has been watched since. Under a limit the call is
        # saved; the cancel at the give-up time reads a late code.
        return _later(rt, act, _until(rt, deadline, wait))
    try:
        rt.admit_poll(give_up=give_up_after(rt.settings, job.code_timeout))
        status = rt.client.status(act.order_id)
    except Throttled as exc:
        pace.refused(exc.retry_after)
        return _later(rt, act, _until(rt, deadline, pace.wait()))
    except NotFound:
        why = "the provider no longer knows it"
        return lambda session: end_slot(
            rt, session, act, State.EXPIRED, "order_vanished", error=why
        )
    except ProviderError as exc:
        log.warning("poll_failed", activation_id=act.id, error=str(exc))
        return _later(rt, act, _until(rt, deadline, rt.settings.poll_interval))
    if status.code is not None:
        return _received(rt, act, status.code)
    wait = _until(rt, deadline, _poll_wait(rt, act, job))
    log.debug("order_polled", activation_id=act.id, next_poll_in=round(wait, 2))
    return _later(rt, act, wait, looked=True)


def _later(rt: Runtime, act: Activation, delay: float, *, looked: bool = False) -> Write:
    """Poll again after ``delay`` seconds, if the slot is still where it was read; ``looked``:
    a poll just read the order without its code (the arrival model learns from when)."""
    when = rt.after(delay)
    looked_at = rt.now() if looked else None

    def write(session: Session) -> list[Nudge]:
        assert act.id is not None
        moved = store.reschedule(session, act, when, looked_at=looked_at)
        return [Nudge(Action.CHECK, act.id, delay)] if moved else []

    return write


def _poll_wait(rt: Runtime, act: Activation, job: Job) -> float:
    assert act.ordered_at is not None and act.country_id is not None
    age = (rt.now() - act.ordered_at).total_seconds()
    give_up = give_up_after(rt.settings, job.code_timeout)
    return rt.poll_wait(act.service_id, act.country_id, age, give_up=give_up)


def cancel(rt: Runtime, activation_id: int) -> list[Nudge]:
    """Ask the provider to cancel and refund an order; after a refusal, read /status first.

    A refused or unconfirmed cancel is never answered with the same cancel: the slot keeps
    ``cancel_answer`` until a ``/status`` read says what became of the order (a code: it ends
    ``received``; still waiting: the cancel goes again, paced). The read waits its turn under
    the rate limit like any call, and the cancel is not sent again meanwhile.
    """
    with reading(rt.engine) as session:
        act = queries.get_activation(session, activation_id)
        if act is None or act.state is not State.CANCELLING or not rt.is_due(act.next_action_at):
            return []
        job = queries.get_jobs(session, [act.job_id]).get(act.job_id)
        target = queries.get_targets(session, [act.target_id]).get(act.target_id)
    with about(act, job, target):
        return _cancel(rt, act)


def _cancel(rt: Runtime, act: Activation) -> list[Nudge]:
    assert act.order_id is not None and act.ordered_at is not None
    if act.cancel_answer is not None:
        return _reconcile(rt, act)
    allowed_at = cancel_allowed_at(rt, act)
    if rt.now() < allowed_at:
        return defer(rt, act, Action.CANCEL, (allowed_at - rt.now()).total_seconds())

    # Into the wallet's quiet gate before the cancel is marked sent; out once its answer is
    # recorded, so a wallet checkpoint never reads the balance mid-refund.
    token = rt.quiet.enter() if rt.quiet is not None else None
    if rt.quiet is not None and token is None:
        return defer(rt, act, Action.CANCEL, HELD_RETRY)  # a checkpoint is reading the wallet
    try:
        return _send_cancel(rt, act)
    finally:
        if rt.quiet is not None:
            rt.quiet.leave(token)


def _send_cancel(rt: Runtime, act: Activation) -> list[Nudge]:
    """Send the cancel (once) and record its answer."""
    assert act.order_id is not None
    earlier_unknown = act.cancel_sent_at is not None
    with transaction(rt.engine) as session:
        if not store.mark_cancel_sent(session, act, rt.now()):
            return []
    try:
        rt.client.cancel(act.order_id)
    except CannotCancel:
        return _answered(rt, act, CancelAnswer.REFUSED, "cannot_cancel", unknown=earlier_unknown)
    except CancelFailed as exc:
        # After a cancel whose answer was lost, a refusal may be the provider meeting its effect.
        after_unknown = exc.replayed or earlier_unknown
        answer = CancelAnswer.REFUSED_AFTER_UNKNOWN if after_unknown else CancelAnswer.REFUSED
        return _answered(rt, act, answer, "cancel_failed", unknown=after_unknown)
    except NotFound:
        return _end(
            rt, act, State.EXPIRED, "order_vanished", error="the provider no longer knows it"
        )
    except (NotSent, RateLimited) as exc:
        # Provably not acted on (it never left, or a 429 turned it away): the same cancel, later.
        delay = exc.retry_after if isinstance(exc, RateLimited | Throttled) else 1.0
        return _cancel_later(rt, act, delay, why=str(exc), unknown=earlier_unknown)
    except ProviderError as exc:
        # A 5xx, an answer that is not the documented success, or none at all: it may have acted.
        return _answered(rt, act, CancelAnswer.UNCONFIRMED, str(exc), unknown=True)
    log.info("order_cancelled", activation_id=act.id, order_id=act.order_id)
    return _end(rt, act, State.CANCELLED, "order_cancelled", reserve=0)


def _answered(
    rt: Runtime, act: Activation, answer: CancelAnswer, why: str, *, unknown: bool
) -> list[Nudge]:
    """The cancel was refused or went unconfirmed: note it, then read /status (not re-cancel).

    ``unknown`` keeps the mark that a cancel of this order may have acted unseen.
    """
    attempt = act.cancel_attempts + 1
    log.info(
        "cancel_refused", activation_id=act.id, order_id=act.order_id, answer=why, attempt=attempt
    )
    with transaction(rt.engine) as session:
        moved = store.move(
            session,
            act,
            State.CANCELLING,
            event="cancel_refused",
            cancel_answer=answer,
            cancel_attempts=attempt,
            cancel_sent_at=act.cancel_sent_at if unknown else None,
            error=why,
            next_action_at=rt.now(),
        )
    return _reconcile(rt, act) if moved else []


def _reconcile(rt: Runtime, act: Activation) -> list[Nudge]:
    """Read /status after a refused or unconfirmed cancel, and act on what it shows."""
    assert act.order_id is not None and act.id is not None
    try:
        status = rt.client.status(act.order_id, priority=Priority.CANCEL)
    except Throttled as exc:
        return defer(rt, act, Action.CANCEL, exc.retry_after)  # the read waits its turn
    except NotFound:
        return _end(
            rt, act, State.EXPIRED, "order_vanished", error="the provider no longer knows it"
        )
    except ProviderError as exc:
        if _past_expiry(rt, act):
            why = f"never confirmed cancelled: {exc}"
            return _end(rt, act, State.EXPIRED, "order_expired", error=why)
        log.warning("cancel_reconcile_failed", activation_id=act.id, error=str(exc))
        return defer(rt, act, Action.CANCEL, _until_expiry(rt, act, READ_RETRY_SECONDS))
    if status.code is not None:
        log.info("cancel_reconciled", activation_id=act.id, outcome="code")
        return _store_code(rt, act, status.code)
    if act.cancel_answer == CancelAnswer.REFUSED_AFTER_UNKNOWN:
        if _past_expiry(rt, act, margin=SKEW_SECONDS):
            # The refusal may be the provider's expiry, not our unseen cancel: /status tells
            # neither apart (both wait for a code that never comes). Counted as spent.
            why = "expired, or cancelled unseen: counted as spent"
            return _end(rt, act, State.EXPIRED, "order_expired", error=why)
        # Our earlier cancel went through but its answer was lost; the refusal met its effect.
        log.info("cancel_reconciled", activation_id=act.id, outcome="cancelled")
        return _end(rt, act, State.CANCELLED, "order_cancelled", reserve=0)
    if _past_expiry(rt, act):
        return _end(rt, act, State.EXPIRED, "order_expired", error="expired before a cancel took")
    pace = _cancel_pace(rt, act)
    log.info("cancel_reconciled", activation_id=act.id, outcome="waiting", cancel_in=round(pace))
    with transaction(rt.engine) as session:
        moved = store.move(
            session,
            act,
            State.CANCELLING,
            event="cancel_read_waiting",
            cancel_answer=None,
            next_action_at=rt.after(pace),
        )
    return [Nudge(Action.CANCEL, act.id, pace)] if moved else []


def _cancel_pace(rt: Runtime, act: Activation) -> float:
    """How long after a read showed the order still waiting its cancel goes again.

    The provider's refusal lasts minutes, not milliseconds: the wait doubles with each refusal
    (from ``CANCEL_PACE`` up to ``CANCEL_PACE_MAX``). Under a rate limit, the cancels sent
    again after a refusal and their reads plan to use at most ``RETRY_SHARE`` of it all
    together, so refused cancels never starve other jobs' orders and polls. A lost answer is
    no refusal: that cancel goes again soon (``LOST_ANSWER_PACE``, doubling up to
    ``CANCEL_PACE``), while the provider's refusal of it can still be told from its expiry
    (before it, the refusal means the lost cancel took; past it, either, counted as spent).
    Every wait gives way to the provider's expiry: the last tries come at most half the time
    left before it.
    """
    doubling = 2 ** max(0, act.cancel_attempts - 1)
    if act.cancel_answer == CancelAnswer.UNCONFIRMED:
        return _until_expiry(rt, act, min(LOST_ANSWER_PACE * doubling, CANCEL_PACE))
    pace = min(CANCEL_PACE * doubling, CANCEL_PACE_MAX)
    rate = rt.settings.rate_limit
    if rate > 0:
        calls_per_retry = 2  # the cancel and its read
        pace = max(pace, calls_per_retry * rt.cancelling.get() / (rate * RETRY_SHARE))
    return _until_expiry(rt, act, pace)


def _until_expiry(rt: Runtime, act: Activation, seconds: float) -> float:
    """``seconds``, but at most half the time left before the provider's expiry (>= 1 s)."""
    assert act.ordered_at is not None
    expiry = act.ordered_at + timedelta(seconds=rt.settings.provider_expiry)
    return max(1.0, min(seconds, (expiry - rt.now()).total_seconds() / 2))


def _cancel_later(
    rt: Runtime, act: Activation, delay: float, *, why: str, unknown: bool
) -> list[Nudge]:
    """Send the same cancel again later: nothing reached the provider this time."""
    if _past_expiry(rt, act):
        return _end(rt, act, State.EXPIRED, "order_expired", error=f"never cancelled: {why}")
    with transaction(rt.engine) as session:
        moved = store.move(
            session,
            act,
            State.CANCELLING,
            event="cancel_not_sent",
            cancel_sent_at=act.cancel_sent_at if unknown else None,
            next_action_at=rt.after(delay),
        )
    assert act.id is not None
    return [Nudge(Action.CANCEL, act.id, delay)] if moved else []


def _store_code(rt: Runtime, act: Activation, code: str) -> list[Nudge]:
    with transaction(rt.engine) as session:
        return _received(rt, act, code)(session)


def _received(rt: Runtime, act: Activation, code: str) -> Write:
    """Keep the code: the slot ends ``received``, as of now."""
    at = rt.now()
    log.info("code_received", activation_id=act.id, order_id=act.order_id)
    # The row's code_after, the last look that found none (or the purchase), stays: the code
    # came between it and now.
    return lambda session: end_slot(
        rt, session, act, State.RECEIVED, "code_received", code=code, code_at=at
    )


def _end(rt: Runtime, act: Activation, to: State, event: str, **values: Any) -> list[Nudge]:
    """End the slot in a transaction of its own (targets.end_slot)."""
    with transaction(rt.engine) as session:
        return end_slot(rt, session, act, to, event, **values)


def _past_expiry(rt: Runtime, act: Activation, *, margin: float = 0.0) -> bool:
    """Whether the provider may have expired the order (``margin`` seconds early, for skew)."""
    assert act.ordered_at is not None
    expiry = act.ordered_at + timedelta(seconds=rt.settings.provider_expiry - margin)
    return rt.now() >= expiry


def _until(rt: Runtime, deadline: datetime, seconds: float) -> float:
    """``seconds``, but no later than the deadline (so the cancel is never late)."""
    return max(0.0, min(seconds, (deadline - rt.now()).total_seconds()))
