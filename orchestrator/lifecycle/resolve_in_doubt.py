"""Settle an in-doubt purchase by hand: the user looked at the provider's dashboard and knows."""

from __future__ import annotations

from orchestrator.db import queries, store
from orchestrator.db.engine import savepoint, transaction
from orchestrator.db.errors import IntegrityError
from orchestrator.db.models import State
from orchestrator.errors import ResolveRefused
from orchestrator.lifecycle.nudges import Action, Nudge
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.lifecycle.targets import after_slot_ended
from orchestrator.provider.answers import MAX_ORDER_ID_LENGTH, usable_order_id

ORDER_ID_RULE = f"1 to {MAX_ORDER_ID_LENGTH} printable characters without spaces"


def resolve_in_doubt(rt: Runtime, activation_id: int, *, order_id: str | None) -> list[Nudge]:
    """Attach the order the provider made (it is then polled and cancelled as usual), or, with
    ``order_id=None``, record that nothing was bought and release the budget it held.

    Raises ResolveRefused, changing nothing, for an unknown slot, a slot not in doubt, an
    order id that is not one, or one another slot already holds.
    """
    if order_id is not None:
        valid = usable_order_id(order_id)
        if valid is None:
            raise ResolveRefused(f"an order id is {ORDER_ID_RULE}")
        order_id = valid
    with transaction(rt.engine) as session:
        act = queries.get_activation(session, activation_id)
        if act is None:
            raise ResolveRefused(f"no slot {activation_id}")
        if act.state is not State.IN_DOUBT:
            raise ResolveRefused(f"slot {activation_id} is {act.state.value}, not in_doubt")
        if order_id is None:
            if store.move(
                session,
                act,
                State.FAILED,
                event="settled_not_bought",
                reserve=0,
                settle_pending=False,
                note={"by": "hand"},
                error="resolved by hand: not bought",
            ):
                return after_slot_ended(rt, session, act)  # a codes target buys another
            return []
        other = queries.slot_holding_order(session, order_id)
        if other is not None:
            raise ResolveRefused(_taken(order_id, other))
        try:
            with savepoint(session):
                # The cost is not known from the dashboard id alone; the cap stays reserved.
                store.move(
                    session,
                    act,
                    State.WAITING,
                    event="settled_bought",
                    settle_pending=False,
                    note={"by": "hand"},
                    order_id=order_id,
                    ordered_at=act.claimed_at or rt.now(),
                    error=None,
                    next_action_at=rt.now(),
                )
        except IntegrityError:  # recorded by a worker since the check above
            raise ResolveRefused(
                _taken(order_id, queries.slot_holding_order(session, order_id))
            ) from None
    return [Nudge(Action.CHECK, activation_id)]


def _taken(order_id: str, other: int | None) -> str:
    holder = f"slot {other}'s" if other is not None else "another slot's"
    return f"order id {order_id} is already {holder}: check the id on the provider's dashboard"
