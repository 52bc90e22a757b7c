"""Nudges (wake a step for one slot) and how they are packed into broker messages.

A message costs a worker about as much CPU as a database transaction (enqueue, fetch, ack,
and a trip through the delay queue), so nudges for the same step that fall due together
travel in one message. A message is never delivered before the latest nudge it carries is
due: a step that finds its slot not yet due drops the nudge as a stale duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session


class Action(StrEnum):
    """The actor a nudge wakes."""

    PLACE = "place"
    CHECK = "check"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Nudge:
    """A message to send: wake ``action`` for one slot after ``delay`` seconds."""

    action: Action
    activation_id: int
    delay: float = 0.0


# Slots per message. A worker thread runs a message's purchases and cancels one after
# another, so those share with few: purchases spread over every thread and host, and a
# cancel, which may wait its turn at the rate limit, is not late. Polls are read and written
# together (settle.check_many), so they gain most from company.
BATCH_SIZE: Final = {Action.PLACE: 10, Action.CHECK: 20, Action.CANCEL: 5}
# Nudges due within this many seconds of the first in a message go with it (and wait for
# the last): a poll delayed this much is noise beside the seconds between polls.
SPREAD: Final = 0.2


@dataclass(frozen=True)
class Batch:
    """One message: wake ``action`` for each of ``activation_ids`` after ``delay`` seconds."""

    action: Action
    activation_ids: tuple[int, ...]
    delay: float


def pack(nudges: list[Nudge]) -> list[Batch]:
    """Group nudges by step and due time; each slot appears once per step and delay group."""
    batches: list[Batch] = []
    for action in Action:
        due = sorted((n for n in nudges if n.action is action), key=lambda n: n.delay)
        group: list[Nudge] = []
        for nudge in due:
            full = len(group) >= BATCH_SIZE[action]
            if group and (full or nudge.delay > group[0].delay + SPREAD):
                batches.append(_batch(action, group))
                group = []
            group.append(nudge)
        if group:
            batches.append(_batch(action, group))
    return batches


def _batch(action: Action, group: list[Nudge]) -> Batch:
    ids = tuple(dict.fromkeys(n.activation_id for n in group))  # a slot once, in order
    return Batch(action, ids, max(n.delay for n in group))


# A write to make in a transaction, returning the nudges it asks for (sent after the commit).
Write = Callable[["Session"], list["Nudge"]]
