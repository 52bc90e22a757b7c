"""SQLModel tables: Job, Target, Activation (one row per number to buy) and Event (the audit trail);
JobPlan and TargetPlan, the plain values ``store.submit_job`` plans a job from.

Money is stored as integer micro-dollars (``*_micros``) so that budget arithmetic in SQL is
exact on SQLite and PostgreSQL alike; ``money.py`` converts to and from ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and always read back timezone-aware (SQLite drops zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


def _enum(cls: type[StrEnum], default: StrEnum) -> Any:
    # VARCHAR holding the values ("waiting"), not a native PostgreSQL ENUM of the names:
    # readable in SQL, comparable with plain strings, and free to grow without a type migration.
    column_type = SAEnum(
        cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]
    )
    return Field(default=default, sa_column=Column(column_type, nullable=False, index=True))


def _micros(default: int | None = 0, *, nullable: bool = False) -> Any:
    return Field(default=default, sa_column=Column(BigInteger(), nullable=nullable))


class JobStatus(StrEnum):
    """Where a job stands as a whole."""

    ACTIVE = "active"  # some slot has not ended yet
    FINISHED = "finished"  # every slot ended
    CANCELLED = "cancelled"  # every slot ended after the user cancelled the job


class State(StrEnum):
    """The life of one slot: at most one order, and every order ends.

    planned -> ordering -> waiting -> received
                   |          |
                   |          +-> cancelling -> cancelled | received | expired
                   +-> failed (nothing bought) | in_doubt (maybe bought) -> failed | lost

    An in-doubt purchase is settled by hand (``resolve``) or, under ``exclusive_key``, by a
    wallet checkpoint (lifecycle/checkpoint.py): not bought (failed) or bought with no order
    id to poll or cancel (lost).
    """

    PLANNED = "planned"  # not bought yet
    ORDERING = "ordering"  # claimed; POST /order may be on the wire
    WAITING = "waiting"  # bought; polling for the code
    CANCELLING = "cancelling"  # bought, no code wanted any more; cancel pending or refused
    RECEIVED = "received"  # code stored
    CANCELLED = "cancelled"  # cancelled at the provider and refunded
    EXPIRED = "expired"  # the provider expired it without a code and without a refund
    FAILED = "failed"  # never bought: no stock, price above cap, budget, funds, job cancelled
    IN_DOUBT = "in_doubt"  # a purchase whose outcome is unknown; never re-bought automatically
    LOST = "lost"  # bought, as the wallet showed, but its order id never came: spent, no code


class CancelAnswer(StrEnum):
    """What the provider's last answer to a cancel left unknown; a ``/status`` read comes next.

    A refusal is never answered with the same cancel: the read tells a code that came (the
    slot ends ``received``) from an order still waiting (the cancel is sent again, paced).
    """

    REFUSED = "refused"  # cannot_cancel or cancel_failed: maybe a code came, maybe too early
    # cancel_failed after an earlier cancel whose answer was lost: if no code came, that
    # earlier cancel is what the provider met, and the order was refunded
    REFUSED_AFTER_UNKNOWN = "refused_after_unknown"
    UNCONFIRMED = "unconfirmed"  # no documented answer (5xx, an unusable body, none at all)


FINAL_STATES = frozenset(
    {State.RECEIVED, State.CANCELLED, State.EXPIRED, State.FAILED, State.IN_DOUBT, State.LOST}
)
LIVE_STATES = frozenset(State) - FINAL_STATES


class Job(SQLModel, table=True):
    """One submitted job file."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    source: str = Field(sa_column=Column(Text(), nullable=False))  # the job file, as submitted
    status: JobStatus = _enum(JobStatus, JobStatus.ACTIVE)
    budget_micros: int | None = _micros(None, nullable=True)
    reserved_micros: int = _micros()  # sum of the slots' reservations; never above the budget
    code_timeout: float
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    cancel_requested_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()

    @property
    def shown_status(self) -> str:
        """The status as people read it: an active job whose cancel was asked for is
        ``cancelling`` (it buys nothing more; its bought orders are being finished)."""
        if self.status is JobStatus.ACTIVE and self.cancel_requested_at is not None:
            return "cancelling"
        return self.status.value


class Target(SQLModel, table=True):
    """One entry of a job file's ``targets`` list, resolved to ids."""

    __table_args__ = (UniqueConstraint("job_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    position: int
    service_id: int
    service_name: str
    countries: str  # JSON list of [id, name] pairs, in the user's order of preference
    quantity: int  # numbers to buy; for a codes target, the most it may buy (max_numbers)
    max_price_micros: int = _micros()
    # Codes to get (``codes: N``): slots are added as numbers end without a code, until N
    # codes came or ``quantity`` slots were planned. None: buy ``quantity`` numbers.
    # (Last, where migration 0005 added it.)
    codes_wanted: int | None = None


class Activation(SQLModel, table=True):
    """One number to buy: a slot planned up front, so a slot can be bought at most once."""

    # (job_id, state): "is any slot of this job still live?" is asked each time a slot ends;
    # by job_id alone it reads every slot of the job, most of them ended by then.
    __table_args__ = (
        UniqueConstraint("job_id", "slot"),
        Index("ix_activation_job_id_state", "job_id", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    target_id: int = Field(foreign_key="target.id", index=True)
    slot: int
    state: State = _enum(State, State.PLANNED)
    service_id: int
    country_id: int | None = None
    country_name: str | None = None
    cap_micros: int = _micros()
    reserved_micros: int = _micros()  # budget held: the cap while unsure, the cost once known
    order_id: str | None = Field(default=None, unique=True)
    phone: str | None = None
    cost_micros: int | None = _micros(None, nullable=True)
    code: str | None = None
    attempts: int = 0  # purchase attempts that provably bought nothing (no stock, throttled)
    cancel_attempts: int = 0
    # Set just before a cancel is sent, cleared when its answer is recorded: still set on the
    # next attempt means an earlier cancel's fate is unknown (it may have gone through).
    cancel_sent_at: datetime | None = _ts()
    cancel_reason: str | None = None
    error: str | None = None
    next_action_at: datetime | None = _ts(index=True)  # when the next nudge is due
    claimed_at: datetime | None = _ts()
    ordered_at: datetime | None = _ts()
    code_at: datetime | None = _ts()
    finished_at: datetime | None = _ts()
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    # Set when a cancel was refused or went unconfirmed: the next step is a /status read, not
    # another cancel (see CancelAnswer). Cleared when that read shows the order still waiting.
    # (Last, where migration 0004 added it.)
    cancel_answer: CancelAnswer | None = Field(
        default=None, sa_column=Column(String(32), nullable=True)
    )
    attempt: int = 1  # which of its target's slots this is, 1, 2, ... (migration 0005)
    # The live price the purchase was sent at: what an in-doubt purchase cost if it bought
    # anything, for the wallet checkpoint that settles it (migration 0006).
    quoted_micros: int | None = _micros(None, nullable=True)
    # In doubt and due for settling at a wallet checkpoint (``exclusive_key``): the job is not
    # finished until that is tried (migration 0006).
    settle_pending: bool = False
    # The last moment the order was seen without its code (the poll before the one that read
    # it, or the purchase): the code came between this and ``code_at`` (migration 0007).
    code_after: datetime | None = _ts()


class Event(SQLModel, table=True):
    """One line of the audit trail: what happened to a job or a slot, and when."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    activation_id: int | None = Field(default=None, foreign_key="activation.id", index=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    kind: str
    detail: str = ""  # JSON object


class WalletCheckpoint(SQLModel, table=True):
    """The wallet's balance read at a quiet moment of its key, beside the ledger's totals then.

    Quiet: no purchase or cancel of the key in flight or unrecorded (provider/quiet.py), so
    the balance and the database describe the same instant. Between two checkpoints the
    wallet's movement is set against the charges and refunds recorded in between (``audit``).
    """

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(index=True)  # the API key's fingerprint, never the key
    at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False, index=True))
    reason: str  # job_started, job_finished, in_doubt, interval, audit
    balance_micros: int = _micros()
    spent_micros: int = _micros()  # charged and not refunded, every slot of the database
    refunded_micros: int = _micros()  # charges that came back (cancelled orders)
    in_doubt_micros: int = _micros()  # the caps held by in-doubt purchases
    in_doubt_ids: str = "[]"  # JSON list of the in-doubt slots' ids at that instant
    # What this checkpoint concluded about the interval it closes (JSON: movement, explained,
    # unexplained, settled slots, or why it could not settle).
    outcome: str = Field(default="{}", sa_column=Column(Text(), nullable=False))
    # Settling stopped here: the key moved with nothing in doubt to explain it (not exclusive
    # after all). Later checkpoints do not settle until ``audit --resume-settling``.
    settling_stopped: bool = False


class ScheduleFire(SQLModel, table=True):
    """One due time of a job file's ``schedule``, claimed by inserting this row (at most once).

    UNIQUE(job_name, fire_at) is what keeps a fire from running twice: across a restart of the
    scheduler, and between two schedulers that both believe they hold the lock.
    """

    __table_args__ = (UniqueConstraint("job_name", "fire_at"),)

    id: int | None = Field(default=None, primary_key=True)
    job_name: str = Field(index=True)
    fire_at: datetime = Field(sa_column=Column(UTCDateTime(), nullable=False))
    job_id: int | None = Field(default=None, foreign_key="job.id")  # None: nothing submitted
    outcome: str = "claimed"  # claimed -> submitted | skipped_overlap | failed
    error: str | None = None
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


@dataclass(frozen=True)
class TargetPlan:
    """One target of a job to plan, its names resolved to the provider's ids."""

    position: int
    service_id: int
    service_name: str
    countries: Sequence[tuple[int, str]]  # (id, name), in the order to try them
    quantity: int  # numbers to buy; for a codes target, the most it may buy
    max_price_micros: int
    codes_wanted: int | None = None  # a codes target: buy until this many codes came
    first_slots_planned: int | None = None  # slots planned at once (default: quantity)

    @property
    def first_slots(self) -> int:
        return self.quantity if self.first_slots_planned is None else self.first_slots_planned


@dataclass(frozen=True)
class JobPlan:
    """A job to plan (``store.submit_job``): one slot per number of each target."""

    name: str
    budget_micros: int | None
    code_timeout: float
    targets: Sequence[TargetPlan]
    # When the submit began: set before the wallet checkpoint that opens the job's first audit
    # interval, so the job counts as started before it (none: now).
    submitted_at: datetime | None = None
