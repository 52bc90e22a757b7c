"""Buy the number for one slot, at most once: claim and commit, then send ``POST /order`` once."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from orchestrator.db import queries, store
from orchestrator.db.engine import reading, transaction
from orchestrator.db.models import Activation, Job, State, Target
from orchestrator.errors import (
    InsufficientFunds,
    NoStock,
    NotSent,
    ProviderError,
    ProviderRejected,
    RateLimited,
    Throttled,
    UnusableOrder,
)
from orchestrator.lifecycle.nudges import Action, Nudge, Write
from orchestrator.lifecycle.planner import Choice, choose_country
from orchestrator.lifecycle.recording import record_order, record_unusable
from orchestrator.lifecycle.runtime import Runtime, defer
from orchestrator.lifecycle.slot_log import about, logged
from orchestrator.lifecycle.targets import end_slot
from orchestrator.money import from_micros, shown, to_micros
from orchestrator.provider.quiet import HELD_RETRY
from orchestrator.provider.ratelimit import Priority
from orchestrator.provider.wallet import NO_HOLD, Hold, Pause

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

log = structlog.get_logger(__name__)

MAX_UNSENT_ATTEMPTS = 12  # purchases that provably bought nothing before the slot gives up
UNRECORDED_CLAIM = "claimed but never recorded: the purchase may or may not have happened"
BUDGET_RECHECK_SECONDS = 10.0  # a refund elsewhere may free budget; look again this often
BALANCE_RECHECK_SECONDS = 2.0  # another process is reading the balance: look again then
RETRIES_PER_SLOT = 4  # refused orders that come back for each free slot of the rate limit
LATE_SEND = 0.05  # seconds: an order not sent this soon after its rate-limit slot takes another
PAUSED = "buying_paused"  # the job event: buying on the key is paused (wallet.py)


class Purchases:
    """The slots of one message, read once, and the outcome of its last order, still owed.

    What one ``POST /order`` came to is written in the transaction that claims the next slot,
    so a purchase costs one write transaction instead of two. At most one outcome is owed,
    and only while the next slot goes straight to its claim (the rate limit holds an order
    back a fraction of a second at most): before a price refresh, which may wait on the
    network, it is written on its own, and finish() writes the last.
    Until written, its slot stays ``ordering``: a process dying then leaves the order to the
    claim lease (``in_doubt``), as a death just after the POST always did.

    What was read may be stale by a slot's turn: every write is a compare-and-set, and the
    claim checks the job (status, cancel, budget) in the database.
    """

    def __init__(self, rt: Runtime, activation_ids: Collection[int]) -> None:
        self.rt = rt
        with reading(rt.engine) as session:
            acts = queries.get_activations(session, activation_ids)
            self.jobs = queries.get_jobs(session, {act.job_id for act in acts})
            self.targets = queries.get_targets(session, {act.target_id for act in acts})
        self.activations = {act.id: act for act in acts if act.id is not None}
        self._owed: list[tuple[Write, str | None]] = []  # and the quiet-gate token to leave
        self._nudges: list[Nudge] = []
        # Claimed by this message, per (service, country): the shared count of numbers
        # waiting is up to a second old, and a message buys several within that second.
        self.claimed: Counter[tuple[int, int]] = Counter()

    def waiting(self, service_id: int) -> dict[int, int]:
        """Numbers of the service waiting per country, this message's claims included."""
        counts = dict(self.rt.waiting_by_country(service_id))
        for (service, country), n in self.claimed.items():
            if service == service_id:
                counts[country] = counts.get(country, 0) + n
        return counts

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction that also writes what is owed, after the caller's own work."""
        owed: list[tuple[Write, str | None]] = []
        try:
            with transaction(self.rt.engine) as session:
                yield session
                # Last, so that a failure in the caller's work leaves them unapplied, to be
                # written later. Once applied they are not retried: their rows changed in memory.
                owed, self._owed = self._owed, []
                nudges = [nudge for write, _ in owed for nudge in write(session)]
        finally:
            for _, token in owed:  # recorded (or never will be: the claim lease decides)
                _leave(self.rt, token)
        self._nudges += nudges

    def owe(self, write: Write, token: str | None = None) -> None:
        """Write ``write`` with the next transaction, then leave the quiet gate by ``token``."""
        self._owed.append((write, token))

    def flush(self) -> None:
        """Write what is owed now, on its own."""
        if self._owed:
            with self.transaction():
                pass

    def finish(self) -> list[Nudge]:
        """Write what is owed; return the nudges that the owed writes asked for."""
        self.flush()
        nudges, self._nudges = self._nudges, []
        return nudges


def place(rt: Runtime, activation_id: int, *, purchases: Purchases | None = None) -> list[Nudge]:
    """Drive a planned slot to an order (or to its end); return the nudges to send next.

    ``purchases``: the message's slots, read once; the caller then calls its finish().
    """
    if purchases is None:
        alone = Purchases(rt, [activation_id])
        return _place(rt, alone, activation_id) + alone.finish()
    return _place(rt, purchases, activation_id)


def _place(rt: Runtime, purchases: Purchases, activation_id: int) -> list[Nudge]:
    act = purchases.activations.get(activation_id)
    if act is None:
        return []
    job, target = purchases.jobs[act.job_id], purchases.targets[act.target_id]
    with about(act, job, target):
        return _drive(rt, purchases, act, job, target)


def _drive(
    rt: Runtime, purchases: Purchases, act: Activation, job: Job, target: Target
) -> list[Nudge]:
    if act.state is State.ORDERING:
        if claim_expired(rt, act):
            with purchases.transaction() as session:
                return expire_claim(rt, session, act)
        return []
    if act.state is not State.PLANNED or not rt.is_due(act.next_action_at):
        return []  # a duplicate or stale message: the row says what to do, not the message
    if job.cancel_requested_at is not None:
        with purchases.transaction() as session:
            return end_slot(rt, session, act, State.FAILED, "slot_dropped", error="job cancelled")
    if rt.wallet is not None and (pause := rt.wallet.paused()) is not None:
        return _wait_for_wallet(rt, purchases, act, pause)
    choice = _choose(rt, purchases, act, target)
    if not isinstance(choice, Choice):
        return choice

    # Into the wallet's quiet gate before the claim; out once the order's outcome is recorded
    # (by the owed write), so a wallet checkpoint never reads the balance mid-purchase.
    token = rt.quiet.enter() if rt.quiet is not None else None
    if rt.quiet is not None and token is None:
        return _later(rt, act, HELD_RETRY, spread=True)  # a checkpoint is reading the wallet
    try:
        bought = _claim_and_send(rt, purchases, act, job, target, choice, token)
    except BaseException:
        _leave(rt, token)
        raise
    if bought is None:
        return []  # sent: the owed write leaves the gate
    _leave(rt, token)
    return bought


def _claim_and_send(
    rt: Runtime,
    purchases: Purchases,
    act: Activation,
    job: Job,
    target: Target,
    choice: Choice,
    token: str | None,
) -> list[Nudge] | None:
    """Claim the slot and send its order; None once sent (its outcome is owed, with
    ``token``), else what the slot does instead."""
    slot_at = None
    if rt.throttle is not None:
        # An order waits for its slot at most one interval (and a quarter of the limiter's
        # max_wait): what is owed can wait that long with it.
        try:
            rt.throttle.acquire(Priority.ORDER)
        except Throttled as exc:
            return _throttled(rt, act, exc.retry_after)
        slot_at = time.monotonic()
    held = NO_HOLD
    if rt.wallet is not None:
        # Again: another worker's order may have met insufficient_funds while this one waited.
        if (pause := rt.wallet.paused()) is not None:
            return _wait_for_wallet(rt, purchases, act, pause)
        try:
            taken = rt.wallet.take(act.cap_micros)
        except ProviderError as exc:
            return _read_failed(rt, act, exc, "balance_unavailable")
        if taken is None:
            return _later(rt, act, BALANCE_RECHECK_SECONDS, spread=True)
        if taken is False:
            return _min_balance_reached(rt, purchases, act)
        held = taken

    with purchases.transaction() as session:
        claimed = store.claim(
            session,
            act,
            country_id=choice.country_id,
            country_name=choice.country_name,
            next_action_at=rt.after(rt.claim_lease),
            now=rt.now(),
            quoted_micros=to_micros(choice.price),
        )
        if claimed is not store.Claim.CLAIMED:
            _give_back(rt, held)
        if claimed is store.Claim.TAKEN:
            return []
        if claimed is store.Claim.NO_BUDGET:
            return _budget_refused(rt, session, act)
    # Committed: from here on the slot is ours, and any doubt about the POST keeps it so.
    _still_on_time(rt, slot_at)
    with about(act, job, target):  # now in its country
        write = logged(_send_order(rt, act, job, choice, held), act, job, target)
        purchases.owe(write, token)
    return None


def _still_on_time(rt: Runtime, slot_at: float | None) -> None:
    """Take a new rate-limit slot for an order whose claim outlasted the one it booked.

    Between the slot and the POST come the balance hold and the claim's write, which may wait
    on the database. Sent late, the order comes less than an interval before the request
    booked after it, and a strict provider answers that one 429 (bench (d), 0.5 requests/s:
    one in 41 orders, once slots were booked back to back). The slot booked is lost; the new
    one is taken at a poll's priority, as the order's own turn had already come. None soon:
    the POST goes as it is, and a 429 provably bought nothing (the client tries again).
    The wait, a poll's horizon (at most half of wiring.MAX_WAIT_CAP), fits in the slack that
    Runtime.claim_lease keeps beyond the longest POST, so the claim does not lapse meanwhile.
    """
    if rt.throttle is None or slot_at is None:
        return
    late = time.monotonic() - slot_at
    if late <= LATE_SEND:
        return
    log.debug("order_slot_missed", late=round(late, 3))
    with contextlib.suppress(Throttled):
        rt.throttle.acquire(Priority.POLL)


def _choose(
    rt: Runtime, purchases: Purchases, act: Activation, target: Target
) -> Choice | list[Nudge]:
    """The country to buy the slot in, at its live price; or, when there is none now, what
    the slot does instead (tried later, or ended with each country's reason)."""
    countries = [(int(c), str(n)) for c, n in json.loads(target.countries)]
    country_ids = [country_id for country_id, _ in countries]
    if not rt.prices.fresh_for(act.service_id, country_ids):
        purchases.flush()  # the price refresh may wait on the network
    try:
        prices = rt.prices.for_countries(act.service_id, country_ids)
    except ProviderError as exc:
        return _read_failed(rt, act, exc, "prices_unavailable")

    outcomes = rt.outcomes(act.service_id)
    waiting = None
    if target.codes_wanted is not None:  # a codes target spreads its first numbers to learn
        waiting = purchases.waiting(act.service_id)
    breakers = rt.breakers(act.service_id)
    cap = from_micros(act.cap_micros)
    choice = choose_country(countries, prices, cap, outcomes, waiting=waiting, breakers=breakers)
    if isinstance(choice, Choice):
        return choice
    if choice.reason == "breaker_open" and breakers:
        # Every country left is cooling down: the number waits for the first to reopen (its
        # trial), rather than end unbought.
        reopen = min(breaker.until for breaker in breakers.values())
        log.info("slot_waits_for_breaker", activation_id=act.id, until=reopen.isoformat())
        return _later(rt, act, max(1.0, (reopen - rt.now()).total_seconds()))
    return _fail(rt, purchases, act, choice.reason, choice.detail)


def _send_order(
    rt: Runtime, act: Activation, job: Job, choice: Choice, held: Hold = NO_HOLD
) -> Write:
    """Send the one ``POST /order``; return the write that records what it came to.

    ``held``: what the wallet guard took from the cached balance for this purchase; what the
    order did not spend is given back (all of it when nothing was bought).
    """
    try:
        order = rt.client.order(act.service_id, choice.country_id, slot_acquired=True)
    except NoStock:
        _give_back(rt, held)
        rt.prices.mark_out_of_stock(act.service_id, choice.country_id)
        return _unclaim(rt, act, delay=0.0, why="no_stock")
    except (NotSent, RateLimited) as exc:
        _give_back(rt, held)
        delay = exc.retry_after if isinstance(exc, RateLimited | Throttled) else 5.0
        return _unclaim(rt, act, delay=delay, why=type(exc).__name__)
    except InsufficientFunds:
        # Provably not bought: the slot goes back to planned, to be bought once the pause ends.
        _give_back(rt, held)
        pause = _pause_buying(rt, act, "insufficient_funds")
        return _unclaim(rt, act, delay=_after_pause(pause), why="insufficient_funds", pause=pause)
    except ProviderRejected as exc:
        _give_back(rt, held)
        log.warning("order_refused", activation_id=act.id, code=exc.code)
        code = exc.code
        # Refused outright (a bad service): a replacement would be refused too.
        return lambda session: end_slot(
            rt, session, act, State.FAILED, "order_refused", replace=False, reserve=0, error=code
        )
    except UnusableOrder as exc:
        # It bought a number we cannot use as answered: keep it, and cancel it for a refund.
        log.error("order_unusable", activation_id=act.id, order_id=exc.order_id, error=str(exc))
        if exc.cost is not None:
            _give_back(rt, held, spent=to_micros(exc.cost))
        return record_unusable(rt, act, exc)
    except ProviderError as exc:
        # It may have bought a number: hold the cap, never buy this slot again by ourselves.
        log.error("order_in_doubt", activation_id=act.id, error=str(exc))
        error = str(exc)
        return lambda session: end_slot(
            rt, session, act, State.IN_DOUBT, "order_in_doubt", error=error
        )
    log.info("order_placed", activation_id=act.id, order_id=order.order_id, cost=shown(order.cost))
    rt.prices.bought(act.service_id, choice.country_id, order.cost)
    _give_back(rt, held, spent=to_micros(order.cost))
    return record_order(rt, act, job, order)


def _unclaim(
    rt: Runtime, act: Activation, *, delay: float, why: str, pause: Pause | None = None
) -> Write:
    """Give back a slot whose POST provably bought nothing, to be tried again later.

    ``pause``: the wallet pause this answer set or met, recorded on the job (once).
    """
    attempts = act.attempts + 1

    def write(session: Session) -> list[Nudge]:
        if pause is not None:
            _record_pause(session, act.job_id, pause)
        if attempts >= MAX_UNSENT_ATTEMPTS:
            return end_slot(
                rt, session, act, State.FAILED, "order_gave_up", replace=False, reserve=0, error=why
            )
        moved = store.move(
            session,
            act,
            State.PLANNED,
            event="order_not_sent",
            reserve=0,
            attempts=attempts,
            error=why,
            next_action_at=rt.after(delay),
        )
        return [Nudge(Action.PLACE, act.id or 0, delay)] if moved else []

    return write


def _budget_refused(rt: Runtime, session: Session, act: Activation) -> list[Nudge]:
    job = session.get(Job, act.job_id)
    assert job is not None and act.id is not None
    if job.cancel_requested_at is None and queries.has_live_reservations(
        session, act.job_id, besides=act.id
    ):
        store.reschedule(session, act, rt.after(BUDGET_RECHECK_SECONDS))
        return [Nudge(Action.PLACE, act.id, BUDGET_RECHECK_SECONDS)]
    reason = "job cancelled" if job.cancel_requested_at else "budget exhausted"
    return end_slot(rt, session, act, State.FAILED, "slot_dropped", replace=False, error=reason)


def claim_expired(rt: Runtime, act: Activation) -> bool:
    """Whether the slot's claim is older than the lease: whoever held it died or hung."""
    return act.claimed_at is not None and act.claimed_at < rt.after(-rt.claim_lease)


def expire_claim(rt: Runtime, session: Session, act: Activation) -> list[Nudge]:
    """An expired claim's POST may have bought a number: the slot is in doubt."""
    return end_slot(rt, session, act, State.IN_DOUBT, "order_in_doubt", error=UNRECORDED_CLAIM)


def _fail(
    rt: Runtime, purchases: Purchases, act: Activation, reason: str, detail: str
) -> list[Nudge]:
    # No allowed country can be bought now: a replacement would meet the same wall.
    error = f"{reason}: {detail}"
    with purchases.transaction() as session:
        nudges = end_slot(
            rt, session, act, State.FAILED, "slot_dropped", replace=False, error=error
        )
    log.warning("slot_dropped", activation_id=act.id, reason=reason, detail=detail)
    return nudges


def _read_failed(rt: Runtime, act: Activation, exc: ProviderError, event: str) -> list[Nudge]:
    """A read the purchase needs (prices, balance) failed: try the slot again later."""
    if isinstance(exc, Throttled):
        return _later(rt, act, exc.retry_after, spread=True)
    log.warning(event, activation_id=act.id, error=str(exc))
    return _later(rt, act, rt.settings.poll_interval)


def _throttled(rt: Runtime, act: Activation, retry_after: float) -> list[Nudge]:
    """An order the rate limit refused: try again once its turn may have come.

    Every refusal costs a message, a read and a write. Were every waiting order to come back
    at the next free slot, each would be refused about once per slot until its turn (78 times
    per number in bench scenario (b)). They come back instead spread over the time the orders
    waiting take at the rate limit, so that about RETRIES_PER_SLOT of them try for each slot:
    enough that a free slot still finds an order.
    """
    rate = rt.settings.rate_limit
    backlog = rt.to_buy.get() / (RETRIES_PER_SLOT * rate) if rate > 0 else 0.0
    return defer(rt, act, Action.PLACE, retry_after + random.random() * max(retry_after, backlog))


def _later(rt: Runtime, act: Activation, delay: float, *, spread: bool = False) -> list[Nudge]:
    if spread:
        # Slots put off together (a held gate, a busy read) come back spread, not all at once.
        delay *= 1 + random.random()
    return defer(rt, act, Action.PLACE, delay)


# (job id, pause end) already recorded on the job by this process: one event per job and pause.
_recorded: set[tuple[int, float]] = set()
_recorded_lock = threading.Lock()


def _leave(rt: Runtime, token: str | None) -> None:
    if rt.quiet is not None:
        rt.quiet.leave(token)


def _give_back(rt: Runtime, held: Hold, *, spent: int = 0) -> None:
    """Give back to the cached balance what the purchase held and did not spend."""
    if rt.wallet is not None:
        rt.wallet.give(held, spent)


def _pause_buying(rt: Runtime, act: Activation, reason: str) -> Pause:
    """Pause buying on the key for ``funds_pause``; the pause now in force."""
    pause = rt.wallet.pause(reason) if rt.wallet is not None else None
    if pause is not None:
        until = _utc(pause.until).strftime("%H:%M:%S")
        event = "funds_exhausted" if reason == "insufficient_funds" else "min_balance_reached"
        log.warning(event, activation_id=act.id, paused_until=until, reason=reason)
        return pause
    current = rt.wallet.paused() if rt.wallet is not None else None
    if current is not None:
        return current
    # No shared guard (or the pause just ended): this process waits the pause on its own.
    return Pause(reason, time.time() + rt.settings.funds_pause)


def _after_pause(pause: Pause) -> float:
    """Seconds until a paused slot tries again: the pause's end, spread over a second so the
    slots waiting on it do not all come back in the same instant."""
    return pause.remaining() + 0.1 + random.random()


def _wait_for_wallet(
    rt: Runtime, purchases: Purchases, act: Activation, pause: Pause
) -> list[Nudge]:
    """Buying on the key is paused: put the slot off until the pause ends, buying nothing."""
    delay = _after_pause(pause)
    with purchases.transaction() as session:
        if not store.reschedule(session, act, rt.after(delay)):
            return []
        _record_pause(session, act.job_id, pause)
    assert act.id is not None
    return [Nudge(Action.PLACE, act.id, delay)]


def _min_balance_reached(rt: Runtime, purchases: Purchases, act: Activation) -> list[Nudge]:
    """Buying would take the balance under ``min_balance``: pause buying on the key."""
    return _wait_for_wallet(rt, purchases, act, _pause_buying(rt, act, "min_balance"))


def _record_pause(session: Session, job_id: int, pause: Pause) -> None:
    """Note the pause on the job's audit trail (``status`` shows it), once per job and pause."""
    with _recorded_lock:
        if (job_id, pause.until) in _recorded:
            return
        if len(_recorded) > 10_000:
            _recorded.clear()
        _recorded.add((job_id, pause.until))
    store.record(session, job_id, PAUSED, reason=pause.reason, until=_utc(pause.until).isoformat())


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
