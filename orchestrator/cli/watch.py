"""What ``orchestrator run`` does between submitting and exporting: local workers and the wait."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from types import FrameType
from typing import TYPE_CHECKING, Any

import redis
import structlog

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.db import queries
from orchestrator.db.engine import transaction
from orchestrator.db.models import FINAL_STATES, LIVE_STATES, JobStatus, State, Target, utcnow
from orchestrator.money import from_micros, shown
from workers.embedded_broker import BrokerLost, EmbeddedBroker

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlalchemy import Engine

log = structlog.get_logger(__name__)


_TO_BUY = frozenset({State.PLANNED, State.ORDERING})


@dataclass(frozen=True)
class Progress:
    """A job's counts, for the progress line and the summary."""

    status: JobStatus
    counts: dict[State, int]
    spend: Decimal
    budget: Decimal | None
    # Per target: (codes received, codes wanted), wanted being ``codes: N`` or, for a numbers
    # target, its quantity (each number should bring a code). Empty: judged by counts alone.
    goals: tuple[tuple[int, int], ...] = ()
    asks_codes: bool = False  # some target says codes: N

    @property
    def codes_missing(self) -> int:
        return sum(max(0, wanted - got) for got, wanted in self.goals)

    @property
    def codes_beyond(self) -> int:
        """Codes past a target's want: a number still waiting when its target was met may
        bring one (paid for). Said beside the capped count, so "codes 6/7" and "7 received"
        are no riddle."""
        return sum(max(0, got - wanted) for got, wanted in self.goals)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ended(self) -> int:
        return sum(n for state, n in self.counts.items() if state in FINAL_STATES)

    @property
    def to_buy(self) -> int:
        """Not bought yet: planned, or being bought now."""
        return self.counts[State.PLANNED] + self.counts[State.ORDERING]

    @property
    def codes(self) -> tuple[int, int]:
        """Codes got (none counted past a target's want) and wanted, over the targets."""
        return sum(min(g, w) for g, w in self.goals), sum(w for _, w in self.goals)

    def line(self) -> str:
        """The counts in words; those after ``ended:`` add up to the total."""
        c = self.counts
        budget = f" of {shown(self.budget)}" if self.budget is not None else ""
        wanted = ""
        if self.asks_codes:
            got, want = self.codes
            extra = f" (+{self.codes_beyond} beyond a target)" if self.codes_beyond else ""
            wanted = f"codes {got}/{want}{extra}; "
        return (
            f"{wanted}{self.ended}/{self.total} ended: {c[State.RECEIVED]} received, "
            f"{c[State.CANCELLED]} cancelled, {c[State.EXPIRED]} expired, "
            f"{c[State.FAILED]} failed, {c[State.IN_DOUBT]} in doubt"
            f"{f', {c[State.LOST]} lost' if c[State.LOST] else ''}; "
            f"{c[State.WAITING]} waiting, {c[State.CANCELLING]} cancelling, "
            f"{self.to_buy} to buy; spent {shown(self.spend)}{budget}"
        )

    def fields(self) -> dict[str, Any]:
        """The counts as a log line's fields (what ``line`` says, for a JSON log)."""
        c = self.counts
        fields: dict[str, Any] = {
            "status": self.status.value,
            "ended": self.ended,
            "total": self.total,
            **{state.value: c[state] for state in State if state not in _TO_BUY},
            "to_buy": self.to_buy,
            "spent": shown(self.spend),
            "budget": shown(self.budget) if self.budget is not None else None,
        }
        if self.asks_codes:
            fields["codes"], fields["codes_wanted"] = self.codes
        return fields

    def exit_code(self, min_success: Decimal | None = None) -> ExitCode:
        """The verdict (README: Exit codes). ``min_success`` (``run --min-success``): OK when
        each target got at least that share of what it asked (numbers, or ``codes:``)."""
        if self.counts[State.IN_DOUBT]:  # a purchase nobody can vouch for needs a human
            return ExitCode.IN_DOUBT
        if min_success is not None and self.goals:
            met = all(got >= min_success * wanted for got, wanted in self.goals)
            return ExitCode.OK if met else ExitCode.INCOMPLETE
        if self.goals:
            # Each target met: a codes target when its codes came, whatever it took.
            return ExitCode.INCOMPLETE if self.codes_missing else ExitCode.OK
        if self.counts[State.RECEIVED] == self.total:
            return ExitCode.OK
        return ExitCode.INCOMPLETE


def read_progress(engine: Engine, job_id: int) -> Progress:
    """The job's current counts and spend."""
    with transaction(engine) as session:
        job = queries.get_job(session, job_id)
        received: dict[int, int] = {}
        targets: dict[int, Target] = {}
        for target, state, count in queries.target_state_counts(session, job_id):
            assert target.id is not None
            targets[target.id] = target
            if state == State.RECEIVED:
                received[target.id] = count
        goals = [
            (received.get(t, 0), row.codes_wanted or row.quantity) for t, row in targets.items()
        ]
        asks_codes = any(row.codes_wanted is not None for row in targets.values())
        return Progress(
            status=job.status,
            counts=queries.state_counts(session, job_id),
            spend=from_micros(queries.spend_micros(session, job_id)),
            budget=from_micros(job.budget_micros) if job.budget_micros is not None else None,
            goals=tuple(goals),
            asks_codes=asks_codes,
        )


def wait_for_job(
    engine: Engine,
    job_id: int,
    *,
    on_progress: Callable[[Progress], None],
    tick: Callable[[], None] = lambda: None,
    interval: float = 1.0,
) -> Progress:
    """Block until every slot of the job has ended, reporting progress each ``interval``."""
    while True:
        progress = read_progress(engine, job_id)
        on_progress(progress)
        if progress.status is not JobStatus.ACTIVE:
            return progress
        tick()
        time.sleep(interval)


class Interrupted(BaseException):  # like KeyboardInterrupt: no `except Exception` takes it
    """Raised when a signal stops ``run`` before its job was submitted: nothing was bought."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Leave(BaseException):
    """Raised when ``run`` stops watching its job and leaves it (a second signal, or
    ``--workers 0`` and a first one)."""


class Signals:
    """SIGINT and SIGTERM while ``run`` works.

    Until the job is being submitted, a signal stops ``run`` at once (``Interrupted``): nothing
    was bought. From then on signals are only noted, for ``run`` to act on where it is safe:
    the first stops the buying and lets the bought orders finish, the second leaves.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self._raise = True
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may handle signals (run called in-process by a test)
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        self._previous.clear()

    def submitting(self) -> None:
        """From now on only note signals: a job is submitted whole, and then finished."""
        self._raise = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.received.append(signum)
        if self._raise:
            raise Interrupted(signum)

    def exit_code(self) -> ExitCode:
        return ExitCode.for_signal(self.received[0] if self.received else signal.SIGINT)


class BrokerWatch:
    """Pings the broker each tick of ``run``'s wait: restarts the embedded one if it died,
    and gives up (``BrokerLost``, exit 5) after ``patience`` seconds without an answer."""

    def __init__(
        self,
        url: str,
        embedded: EmbeddedBroker | None,
        *,
        on_restart: Callable[[str], None],
        patience: float = 30.0,
    ) -> None:
        self._url = url
        self._embedded = embedded
        self._on_restart = on_restart
        self._patience = patience
        self._client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        self._down_since: float | None = None

    def check(self) -> None:
        error = self._ping()
        if error is None:
            self._down_since = None
            return
        if self._embedded is not None and self._embedded.revive():
            self._down_since = None
            self._on_restart(
                f"the embedded broker had stopped ({error}); restarted it at {self._url}"
            )
            return
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            log.warning("broker_not_answering", url=self._url, error=error)
        elif now - self._down_since > self._patience:
            raise BrokerLost(
                f"Redis at {self._url} has not answered for {self._patience:.0f}s: {error}"
            )

    def _ping(self) -> str | None:
        try:
            self._client.ping()
        except redis.RedisError as exc:
            return str(exc) or type(exc).__name__
        return None

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class OpenOrder:
    """A slot of the job that has not ended, as the messages about an interrupted run name it."""

    activation_id: int
    state: State
    order_id: str | None
    ordered_at: datetime | None


def open_orders(engine: Engine, job_id: int) -> list[OpenOrder]:
    """The job's slots that have not ended, in slot order."""
    with transaction(engine) as session:
        return [
            OpenOrder(act.id or 0, act.state, act.order_id, act.ordered_at)
            for _job, _target, act in queries.export_rows(session, [job_id])
            if act.state in LIVE_STATES
        ]


def _clock(moment: datetime) -> str:
    return f"{moment:%H:%M:%S} UTC"


def finishing_line(
    orders: list[OpenOrder], *, cancel_min_age: float, signum: int, now: datetime | None = None
) -> str:
    """What ``run`` says when a first signal stops the buying."""
    bought = [o for o in orders if o.ordered_at is not None and o.state is not State.ORDERING]
    again = "press Ctrl-C" if signum == signal.SIGINT else "send SIGTERM"
    line = f"interrupted: no more purchases; finishing {len(bought)} bought orders"
    if bought:
        # SKEW as settle.py adds it: cancels are sent a second after the provider allows them.
        latest = max(o.ordered_at for o in bought if o.ordered_at is not None)
        allowed = latest + timedelta(seconds=cancel_min_age + 1.0)
        if allowed > (now or utcnow()):
            line += (
                f" (a code-less one is cancelled as the provider allows, all by {_clock(allowed)})"
            )
        else:  # every one is old enough already: a time in the past would read as a delay
            line += " (the provider allows every cancel now: code-less ones are cancelled now)"
    in_flight = sum(1 for o in orders if o.state is State.ORDERING)
    if in_flight:
        line += f" and {in_flight} purchases in flight"
    return f"{line}; {again} again to leave now"


def leftover_lines(
    job_id: int,
    orders: list[OpenOrder],
    *,
    provider_expiry: float,
    cancelled: bool = True,
    shown: int = 20,
) -> list[str]:
    """What ``run`` says when it leaves a job unfinished: which orders, until when, and how."""
    if not orders:
        return [f"job {job_id}: no order is left unfinished"]
    lines = [f"left job {job_id} with {len(orders)} orders unfinished:"]
    for order in orders[:shown]:
        if order.order_id is None or order.ordered_at is None:
            lines.append(f"  slot {order.activation_id}: purchase in flight ({order.state})")
            continue
        expires = order.ordered_at + timedelta(seconds=provider_expiry)
        lines.append(
            f"  slot {order.activation_id}: order {order.order_id} ({order.state}), "
            f"expires {_clock(expires)} unless cancelled"
        )
    if len(orders) > shown:
        lines.append(f"  and {len(orders) - shown} more: `orchestrator status {job_id}`")
    if cancelled:
        why = f"job {job_id} is cancelled, so any worker's sweep cancels the code-less ones"
    else:
        why = "a worker reads their codes and cancels the code-less ones at the job's timeout"
    lines.append(
        f"finish them with `orchestrator worker` (with the same settings) before they expire: {why}"
    )
    return lines
