"""``audit``: the wallet's movement between checkpoints against what the ledger explains.

Each interval between two checkpoints is worked out again from the database as it is now, so
an in-doubt purchase settled since (by a checkpoint or by hand) is counted where its charge
fell. What the ledger does not explain is *unexplained*, and the in-doubt purchases sent in
the interval are listed as what could account for it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime

from orchestrator.db import wallet_ledger
from orchestrator.db.engine import reading
from orchestrator.db.models import WalletCheckpoint
from orchestrator.lifecycle import checkpoint
from orchestrator.lifecycle.nudges import Nudge
from orchestrator.lifecycle.runtime import Runtime


@dataclass(frozen=True)
class Interval:
    """The wallet between two checkpoints, against the ledger."""

    start: WalletCheckpoint
    end: WalletCheckpoint
    fell_micros: int  # the wallet's fall (negative: it rose)
    charged_micros: int
    refunded_micros: int
    in_doubt: list[wallet_ledger.Candidate]  # sent in the interval and still in doubt
    unknown_cost_ids: tuple[int, ...]

    @property
    def unexplained_micros(self) -> int:
        return self.fell_micros - (self.charged_micros - self.refunded_micros)


@dataclass
class Audit:
    """Every interval since a day, and whether they add up."""

    intervals: list[Interval]
    checkpoints: list[WalletCheckpoint]
    taken: bool  # a checkpoint was taken for this audit
    why_not: str  # why not, if not
    exclusive_key: bool
    settling_stopped: bool
    nudges: list[Nudge] = field(default_factory=list)

    @property
    def unexplained_micros(self) -> int:
        return sum(i.unexplained_micros for i in self.intervals)

    @property
    def explained(self) -> bool:
        """Every interval's movement explained to the cent."""
        return all(i.unexplained_micros == 0 for i in self.intervals)


def run_audit(rt: Runtime, *, since: datetime | None, resume_settling: bool = False) -> Audit:
    """Take a checkpoint now (if the key can be made quiet), then audit since ``since``."""
    taken = checkpoint.take(rt, "audit", resume_settling=resume_settling, force=True)
    with reading(rt.engine) as session:
        points = wallet_ledger.checkpoints(session, rt.key_fingerprint, since)
        intervals = []
        in_doubt = wallet_ledger.candidates(session, wallet_ledger.totals(session).in_doubt_ids)
        for start, end in itertools.pairwise(points):
            moved = wallet_ledger.movement(session, start.at, end.at)
            doubt = [c for c in in_doubt if c.claimed_at and start.at < c.claimed_at <= end.at]
            intervals.append(
                Interval(
                    start=start,
                    end=end,
                    fell_micros=start.balance_micros - end.balance_micros,
                    charged_micros=moved.charged_micros,
                    refunded_micros=moved.refunded_micros,
                    in_doubt=doubt,
                    unknown_cost_ids=moved.unknown_cost_ids,
                )
            )
        last = wallet_ledger.last_checkpoint(session, rt.key_fingerprint)
    return Audit(
        intervals=intervals,
        checkpoints=points,
        taken=taken.checkpoint is not None,
        why_not=taken.why,
        exclusive_key=rt.settings.exclusive_key,
        settling_stopped=bool(last and last.settling_stopped),
        nudges=taken.nudges,
    )
