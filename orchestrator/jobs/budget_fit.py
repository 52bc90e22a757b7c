"""Whether a job file's budget can buy what it asks for, judged before anything is bought.

A purchase reserves its target's ``max_price`` from the budget until its cost is known
(``store.claim``), so a budget below every cap buys nothing: the file is refused. A budget
below what the numbers asked for may cost at their caps is allowed, with a warning: costs
under the caps and refunds free budget as the job goes, but the job may end short.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from orchestrator.errors import SpecError
from orchestrator.money import shown

if TYPE_CHECKING:  # the schema imports this module to check a file it has read
    from orchestrator.jobs.spec import JobSpec


def refuse_unaffordable(spec: JobSpec, path: str) -> None:
    """Raise ``SpecError`` (exit 2) naming the file and ``budget`` when it is below every cap."""
    lowest = min(target.max_price for target in spec.targets)
    if spec.budget is not None and spec.budget < lowest:
        raise SpecError(
            path,
            "budget",
            f"{shown(spec.budget)} is below the lowest max_price ({shown(lowest)}): nothing "
            "could be bought (a purchase holds its target's max_price until its cost is known)",
        )


def budget_warning(spec: JobSpec) -> str | None:
    """A warning when the budget holds fewer of the numbers asked for (a codes target: one per
    code) at their caps than asked; None when it holds them all, or there is no budget."""
    if spec.budget is None:
        return None
    asked = [(target.quantity or target.codes or 0, target.max_price) for target in spec.targets]
    wanted = sum(count for count, _ in asked)
    left, held = spec.budget, 0
    for count, cap in sorted(asked, key=lambda item: item[1]):  # the cheapest first: the most
        fits = min(count, int(left // cap))
        held, left = held + fits, left - fits * cap
    if held >= wanted:
        return None
    at_caps = sum((count * cap for count, cap in asked), Decimal(0))
    return (
        f"budget {shown(spec.budget)} holds {held} of the {wanted} numbers asked for at "
        f"their caps ({shown(at_caps)} in all): the job may end short, unless costs under "
        "the caps or refunds free enough of it"
    )
