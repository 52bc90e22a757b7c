"""Settle in-doubt purchases from the wallet: which of them were bought, by their costs.

At a quiet checkpoint (checkpoint.py) the spend the ledger cannot explain is what the
interval's in-doubt purchases cost, if no one else spends on the key. Zero: none was bought,
and each is released (its budget back; a ``codes:`` target buys another). Equal to the costs
of exactly one combination of them: those were bought and are ``lost`` (spent, no order id to
poll or cancel), the rest released. Purchases of equal cost are interchangeable, so a
combination is a count per cost; when two counts fit, or none, nothing is settled and the
figures are left for a human.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from orchestrator.db import queries
from orchestrator.db.models import State
from orchestrator.db.wallet_ledger import Candidate
from orchestrator.lifecycle.nudges import Nudge
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.lifecycle.targets import end_slot

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

MAX_STEPS: Final = 100_000  # combinations looked at before calling the figures ambiguous
NOT_BOUGHT = "settled by the wallet: not bought"
BY: Final = {"by": "wallet_checkpoint"}
LOST = "bought, as the wallet showed, but its order id never came: no code, no refund"


@dataclass
class Settlement:
    outcome: dict[str, Any]
    nudges: list[Nudge] = field(default_factory=list)


def counts_bought(costs: Sequence[int], spent: int) -> dict[int, int] | None:
    """How many purchases of each cost make ``spent``, if exactly one count per cost does.

    ``costs``: one per purchase (micros). None when no combination fits, or several do.
    """
    groups = sorted(Counter(costs).items(), reverse=True)
    found: list[dict[int, int]] = []
    steps = 0

    def search(i: int, left: int, chosen: dict[int, int]) -> bool:
        """False to stop: a second fit was found, or the search ran too long."""
        nonlocal steps
        steps += 1
        if steps > MAX_STEPS:
            found.append({})
            found.append({})
            return False
        if i == len(groups):
            if left == 0:
                found.append({cost: k for cost, k in chosen.items() if k})
            return len(found) < 2
        cost, n = groups[i]
        for k in range(min(n, left // cost if cost else n) + 1):
            chosen[cost] = k
            if not search(i + 1, left - k * cost, chosen):
                return False
        del chosen[cost]
        return True

    if spent < 0:
        return None
    search(0, spent, {})
    return found[0] if len(found) == 1 else None


def settle(rt: Runtime, session: Session, doubt: list[Candidate], unexplained: int) -> Settlement:
    """Settle ``doubt`` against ``unexplained`` spend, or say why not."""
    if any(c.cost_micros is None for c in doubt):
        unknown = [c.activation_id for c in doubt if c.cost_micros is None]
        return Settlement({"cannot_settle": f"price not known for slots {unknown}"})
    costs = [c.cost_micros or 0 for c in doubt]
    counts = counts_bought(costs, unexplained)
    if counts is None:
        return Settlement({"cannot_settle": "no single combination of the in-doubt purchases fits"})
    nudges: list[Nudge] = []
    lost: list[int] = []
    released: list[int] = []
    left = Counter(counts)
    # The earliest sent are taken as the ones bought: any choice is as true as another.
    for cand in sorted(doubt, key=lambda c: (c.claimed_at is None, c.claimed_at)):
        act = queries.get_activation(session, cand.activation_id)
        if act is None or act.state is not State.IN_DOUBT:
            continue
        cost = cand.cost_micros or 0
        if left[cost] > 0:
            left[cost] -= 1
            lost.append(cand.activation_id)
            nudges += end_slot(
                rt,
                session,
                act,
                State.LOST,
                "settled_lost",
                reserve=cost,
                cost_micros=cost,
                ordered_at=act.claimed_at,
                settle_pending=False,
                note=BY,
                error=LOST,
            )
        else:
            released.append(cand.activation_id)
            nudges += end_slot(
                rt,
                session,
                act,
                State.FAILED,
                "settled_not_bought",
                reserve=0,
                settle_pending=False,
                note=BY,
                error=NOT_BOUGHT,
            )
    return Settlement({"settled": {"lost": lost, "released": released}}, nudges)
