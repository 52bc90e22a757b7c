"""Settle an in-doubt purchase by hand: the user looked at the provider's dashboard and knows."""

from __future__ import annotations

from orchestrator import store
from orchestrator.db import transaction
from orchestrator.errors import OrchestratorError
from orchestrator.models import State
from orchestrator.runtime import Action, Nudge, Runtime


def resolve_in_doubt(rt: Runtime, activation_id: int, *, order_id: str | None) -> list[Nudge]:
    """Attach the order the provider made (it is then polled and cancelled as usual), or, with
    ``order_id=None``, record that nothing was bought and release the budget it held."""
    with transaction(rt.engine) as session:
        act = store.get_activation(session, activation_id)
        if act is None:
            raise OrchestratorError(f"no slot {activation_id}")
        if act.state is not State.IN_DOUBT:
            raise OrchestratorError(f"slot {activation_id} is {act.state.value}, not in_doubt")
        if order_id is None:
            store.move(
                session,
                act,
                State.FAILED,
                event="resolved_not_bought",
                reserve=0,
                error="resolved by hand: not bought",
            )
            store.finish_job_if_done(session, act.job_id)
            return []
        # The cost is not known from the dashboard id alone; the cap stays reserved.
        store.move(
            session,
            act,
            State.WAITING,
            event="resolved_bought",
            order_id=order_id,
            ordered_at=act.claimed_at or rt.now(),
            error=None,
            next_action_at=rt.now(),
        )
    return [Nudge(Action.CHECK, activation_id)]
