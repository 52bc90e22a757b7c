"""The circuit breaker per (service, country): stop buying where codes stopped coming.

After ``breaker_failures`` orders in a row (in the order they were bought, among those that
ended) ended without a code (cancelled at their timeout or expired: what estimate.py counts
as code-less), the country is passed over for ``breaker_cooldown`` from the last of them to
end, and purchases go to the next allowed country. A code resets the run. After the
cool-down the next order there is a trial: if it ends without a code too, the last
``breaker_failures`` are all code-less again and the latest is fresh, so the breaker opens
again, for another cool-down.

There is no state of its own: the breaker is read from the orders in the database, so every
worker on every host sees the same one (each re-reads it at most every ``TTL`` seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from orchestrator.config import Settings
from orchestrator.db import queries
from orchestrator.lifecycle.estimate import WINDOW

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session


@dataclass(frozen=True)
class Breaker:
    """An open breaker: no purchase in the country until ``until``."""

    service_id: int
    country_id: int
    until: datetime
    failures: int
    service_name: str = ""
    country_name: str = ""

    @property
    def reason(self) -> str:
        """Why the planner passes the country over."""
        return (
            f"breaker open until {self.until:%H:%M:%S} UTC after {self.failures} orders "
            "without a code"
        )


def tripped(
    run: Sequence[tuple[bool, datetime]], failures: int, cooldown: float, now: datetime
) -> datetime | None:
    """Until when the breaker is open, given a country's last ended orders (the last bought
    first: whether each came without a code, when it ended), or None when it is closed."""
    if cooldown <= 0 or len(run) < failures:
        return None
    last = run[:failures]
    if not all(codeless for codeless, _ in last):
        return None
    until = max(at for _, at in last) + timedelta(seconds=cooldown)
    return until if until > now else None


def read_breakers(
    session: Session,
    *,
    failures: int,
    cooldown: float,
    now: datetime,
    service_id: int | None = None,
) -> dict[tuple[int, int], Breaker]:
    """The open breakers, by (service, country): of one service, or of all."""
    if cooldown <= 0:
        return {}
    runs = queries.last_outcomes(
        session,
        limit=failures,
        since=now - max(WINDOW, timedelta(seconds=cooldown)),
        recent=now - timedelta(seconds=cooldown),
        service_id=service_id,
    )
    breakers: dict[tuple[int, int], Breaker] = {}
    for (service, country), rows in runs.items():
        until = tripped([(codeless, at) for codeless, at, _, _ in rows], failures, cooldown, now)
        if until is not None:
            _, _, country_name, service_name = rows[0]
            breakers[service, country] = Breaker(
                service, country, until, failures, service_name, country_name
            )
    return breakers


def open_breakers(
    session: Session, settings: Settings, now: datetime, service_id: int | None = None
) -> dict[tuple[int, int], Breaker]:
    """``read_breakers`` with the configured ``breaker_failures`` and ``breaker_cooldown``."""
    return read_breakers(
        session,
        failures=settings.breaker_failures,
        cooldown=settings.breaker_cooldown,
        now=now,
        service_id=service_id,
    )
