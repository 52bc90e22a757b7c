"""The logging context of one slot: every line about a number names its job, target, service,
country and order, so a log shared by many jobs (cron, several workers) can be filtered by any.

Bound where a step loads its slot (purchase, poll, cancel) with ``structlog.contextvars``; a
write applied later, in a transaction shared with other slots, is wrapped with its own slot's
context (``logged``), never the context of whichever slot happens to be current.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.db.models import Activation, Job, Target
from orchestrator.lifecycle.nudges import Nudge, Write

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session


def slot_fields(act: Activation, job: Job | None, target: Target | None) -> dict[str, Any]:
    """What a log line about this slot carries; fields not known yet (the country before the
    purchase chose one, the order id before it was bought) are left out rather than null."""
    fields: dict[str, Any] = {"job_id": act.job_id, "activation_id": act.id, "slot": act.slot}
    if job is not None:
        fields["job"] = job.name
    if target is not None:
        fields["target"] = target.position
        fields["service"] = target.service_name
    fields["service_id"] = act.service_id
    if act.country_id is not None:
        fields["country"] = act.country_name
        fields["country_id"] = act.country_id
    if act.order_id is not None:
        fields["order_id"] = act.order_id
    return fields


# Every field ``slot_fields`` may bind: one not known for this slot is unbound, so that it
# never shows another slot's value (a thread's context outlives a failed step).
SLOT_KEYS = (
    "job_id",
    "activation_id",
    "slot",
    "job",
    "target",
    "service",
    "service_id",
    "country",
    "country_id",
    "order_id",
)


@contextmanager
def about(act: Activation, job: Job | None, target: Target | None) -> Iterator[None]:
    """Log lines within name this slot (the fields as they are now; enter again once the
    purchase chose a country or got an order id). The context before is restored after, but
    not after an exception: the line that reports it (``step_failed``) names the slot too;
    the actor clears the context before its next slot."""
    fields = slot_fields(act, job, target)
    # A field this slot does not know is bound to Ellipsis, structlog's mark of an unbound key.
    tokens = structlog.contextvars.bind_contextvars(
        **{key: fields.get(key, Ellipsis) for key in SLOT_KEYS}
    )
    yield  # no try/finally: on an exception the slot's fields stay bound, on purpose
    structlog.contextvars.reset_contextvars(**tokens)


def logged(write: Write, act: Activation, job: Job | None, target: Target | None) -> Write:
    """``write``, logging about this slot whenever and beside whatever slots it is applied."""

    def write_about(session: Session) -> list[Nudge]:
        with about(act, job, target):
            return write(session)

    return write_about
