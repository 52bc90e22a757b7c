"""The ledger's side of the wallet: its totals at an instant, the charges and refunds recorded
between two instants, the in-doubt purchases that could explain the rest, and checkpoints.

Every figure covers the whole database: one API key per database is assumed (the
checkpoints are kept per key fingerprint so that a change of key starts a new series).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlmodel import Session, col

from orchestrator.db.models import Activation, CancelAnswer, State, WalletCheckpoint
from orchestrator.db.queries import CHARGED


@dataclass(frozen=True)
class LedgerTotals:
    """What the database knows of the wallet's spend at one instant."""

    spent_micros: int  # charged and not refunded
    refunded_micros: int  # charged and refunded (cancelled orders)
    in_doubt_micros: int  # caps held by purchases of unknown outcome
    in_doubt_ids: tuple[int, ...]


@dataclass(frozen=True)
class Movement:
    """The charges and refunds recorded in an interval (start, end]."""

    charged_micros: int
    refunded_micros: int
    # Bought in the interval at a cost nobody knows (an unusable answer, a `resolve` by hand):
    # the interval cannot be explained to the cent.
    unknown_cost_ids: tuple[int, ...]

    @property
    def explained_micros(self) -> int:
        """The wallet's fall these records explain (negative: a net refund)."""
        return self.charged_micros - self.refunded_micros


@dataclass(frozen=True)
class Candidate:
    """An in-doubt purchase: what it cost if it bought anything."""

    activation_id: int
    job_id: int
    cost_micros: int | None  # the price it was sent at (None: not known)
    cap_micros: int
    claimed_at: datetime | None


def totals(session: Session) -> LedgerTotals:
    """The ledger's totals now."""
    spent, refunded = session.execute(
        select(
            func.coalesce(func.sum(col(Activation.cost_micros)).filter(CHARGED), 0),
            func.coalesce(
                func.sum(col(Activation.cost_micros)).filter(
                    col(Activation.state) == State.CANCELLED
                ),
                0,
            ),
        )
    ).one()
    doubt = session.execute(
        select(col(Activation.id), col(Activation.reserved_micros))
        .where(col(Activation.state) == State.IN_DOUBT)
        .order_by(col(Activation.id))
    ).all()
    return LedgerTotals(
        spent_micros=int(spent),
        refunded_micros=int(refunded),
        in_doubt_micros=sum(int(reserved) for _, reserved in doubt),
        in_doubt_ids=tuple(int(i) for i, _ in doubt),
    )


def unsettled_calls(session: Session) -> dict[str, int]:
    """Slots whose last call to the provider may have moved the wallet unseen: a claim not
    yet recorded, a cancel sent and not answered, a cancel whose effect is unknown. While
    any is left, a balance read cannot be set against the ledger."""
    unknown_cancel = or_(
        col(Activation.cancel_sent_at).is_not(None),
        col(Activation.cancel_answer).in_(
            [CancelAnswer.UNCONFIRMED.value, CancelAnswer.REFUSED_AFTER_UNKNOWN.value]
        ),
    )
    ordering, cancelling = session.execute(
        select(
            func.count().filter(col(Activation.state) == State.ORDERING),
            func.count().filter(and_(col(Activation.state) == State.CANCELLING, unknown_cancel)),
        )
    ).one()
    found = {"ordering": int(ordering), "cancel_unknown": int(cancelling)}
    return {kind: n for kind, n in found.items() if n}


def movement(session: Session, start: datetime, end: datetime) -> Movement:
    """The charges and refunds recorded in (start, end]: a charge at its order's time, a
    refund at its cancel's."""
    ordered = and_(col(Activation.ordered_at) > start, col(Activation.ordered_at) <= end)
    refunded = and_(
        col(Activation.state) == State.CANCELLED,
        col(Activation.finished_at) > start,
        col(Activation.finished_at) <= end,
    )
    charged_sum, refunded_sum = session.execute(
        select(
            func.coalesce(
                func.sum(col(Activation.cost_micros)).filter(
                    ordered, col(Activation.cost_micros).is_not(None)
                ),
                0,
            ),
            func.coalesce(func.sum(col(Activation.cost_micros)).filter(refunded), 0),
        )
    ).one()
    unknown = session.execute(
        select(col(Activation.id))
        .where(
            ordered,
            col(Activation.cost_micros).is_(None),
            col(Activation.state) != State.IN_DOUBT,
        )
        .order_by(col(Activation.id))
    ).scalars()
    return Movement(int(charged_sum), int(refunded_sum), tuple(int(i) for i in unknown))


def candidates(session: Session, ids: Sequence[int]) -> list[Candidate]:
    """The slots among ``ids`` still in doubt."""
    rows = session.execute(
        select(Activation)
        .where(col(Activation.id).in_(list(ids)), col(Activation.state) == State.IN_DOUBT)
        .order_by(col(Activation.id))
    ).scalars()
    return [
        Candidate(
            activation_id=act.id or 0,
            job_id=act.job_id,
            cost_micros=act.quoted_micros,
            cap_micros=act.cap_micros,
            claimed_at=act.claimed_at,
        )
        for act in rows
    ]


def pending_settles(session: Session) -> list[Activation]:
    """In-doubt slots waiting for a checkpoint to settle them, oldest first."""
    return list(
        session.execute(
            select(Activation)
            .where(col(Activation.settle_pending).is_(True))
            .order_by(col(Activation.finished_at))
        ).scalars()
    )


def clear_pending(session: Session, ids: Sequence[int]) -> None:
    """The checkpoint tried: these slots no longer hold their jobs open."""
    if ids:
        session.execute(
            update(Activation).where(col(Activation.id).in_(list(ids))).values(settle_pending=False)
        )


def last_checkpoint(session: Session, key: str) -> WalletCheckpoint | None:
    """The key's latest checkpoint."""
    return session.execute(
        select(WalletCheckpoint)
        .where(col(WalletCheckpoint.key) == key)
        .order_by(col(WalletCheckpoint.at).desc(), col(WalletCheckpoint.id).desc())
        .limit(1)
    ).scalar_one_or_none()


def checkpoints(session: Session, key: str, since: datetime | None) -> list[WalletCheckpoint]:
    """The key's checkpoints in time order; from the last one before ``since`` (so that the
    first interval after it is complete), or all."""
    query = select(WalletCheckpoint).where(col(WalletCheckpoint.key) == key)
    if since is not None:
        before = session.execute(
            select(func.max(col(WalletCheckpoint.at))).where(
                col(WalletCheckpoint.key) == key, col(WalletCheckpoint.at) <= since
            )
        ).scalar_one_or_none()
        if before is not None:
            query = query.where(col(WalletCheckpoint.at) >= before)
        else:
            query = query.where(col(WalletCheckpoint.at) >= since)
    query = query.order_by(col(WalletCheckpoint.at), col(WalletCheckpoint.id))
    return list(session.execute(query).scalars())


def add_checkpoint(
    session: Session,
    *,
    key: str,
    at: datetime,
    reason: str,
    balance_micros: int,
    ledger: LedgerTotals,
    outcome: dict[str, Any],
    settling_stopped: bool,
) -> WalletCheckpoint:
    """Record a checkpoint."""
    row = WalletCheckpoint(
        key=key,
        at=at,
        reason=reason,
        balance_micros=balance_micros,
        spent_micros=ledger.spent_micros,
        refunded_micros=ledger.refunded_micros,
        in_doubt_micros=ledger.in_doubt_micros,
        in_doubt_ids=json.dumps(list(ledger.in_doubt_ids)),
        outcome=json.dumps(outcome, sort_keys=True),
        settling_stopped=settling_stopped,
    )
    session.add(row)
    session.flush()
    return row
