"""How likely an order is to bring its code, per (service, country): the provider's advertised
rate, corrected by what this installation saw.

The estimate is the mean of a Beta distribution: the advertised rate counts as
``PRIOR_ORDERS`` orders, to which each order of the last ``WINDOW`` adds one success (its code
came) or one failure (it ended without a code: cancelled at its timeout, or expired). A new
country starts at the advertised rate; after ten orders of our own it is halfway to what we
saw; after a hundred, the advertised rate weighs a tenth. Orders that ended without a code for
reasons of ours (the job cancelled, the target already had its codes, a charge over the cap)
say nothing about the country and are not counted.

The planner ranks countries by price / estimate: the expected spend per code when code-less
orders are refunded is the price, but each code-less order also costs its wait and a share
of the rate limit, and one that expires unrefunded costs its price; dividing by the success
rate weighs all three the same way, as the number of orders bought per code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from orchestrator.db import queries

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session

PRIOR_ORDERS = 10.0  # the advertised rate weighs as much as this many orders seen
WINDOW = timedelta(days=7)  # outcomes older than this are forgotten: countries change
FLOOR = 0.01  # no country is taken as hopeless (0): one more look must stay possible
TTL = 5.0  # seconds the outcomes are kept before they are read again (one cheap query)


@dataclass(frozen=True)
class Outcomes:
    """What the orders of one (service, country) came to, in the window."""

    received: int = 0
    codeless: int = 0


def read_outcomes(session: Session, service_id: int, now: datetime) -> dict[int, Outcomes]:
    """This installation's outcomes for the service in the window ending ``now``, per country."""
    seen = queries.outcomes_by_country(session, service_id, since=now - WINDOW)
    return {country: Outcomes(*counts) for country, counts in seen.items()}


def success_rate(advertised_percent: float, seen: Outcomes) -> float:
    """The estimated chance that an order brings its code, between FLOOR and 1."""
    prior = min(max(advertised_percent / 100.0, FLOOR), 1.0)
    estimate = (PRIOR_ORDERS * prior + seen.received) / (
        PRIOR_ORDERS + seen.received + seen.codeless
    )
    return min(max(estimate, FLOOR), 1.0)


def numbers_in_flight(codes_missing: int, rate: float) -> int:
    """How many numbers to have bought and waiting to expect ``codes_missing`` codes.

    ``codes_missing / rate``, rounded up: on average just enough; more would overshoot the
    codes wanted (numbers whose code comes after the target has its codes are paid for), fewer
    would need another round of waiting.
    """
    if codes_missing <= 0:
        return 0
    return math.ceil(codes_missing / max(rate, FLOOR) - 1e-9)
