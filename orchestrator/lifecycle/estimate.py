"""How likely an order is to bring its code, per (service, country): the provider's advertised
rate, corrected by what this installation saw.

The estimate is the mean of a Beta distribution: the advertised rate counts as
``PRIOR_ORDERS`` orders, to which each order of the last ``WINDOW`` adds one success (its code
came) or one failure (it ended without a code: cancelled at its timeout, or expired). A new
country starts at the advertised rate; after four orders of our own it is halfway to what we
saw; after forty, the advertised rate weighs a tenth. (Ten, the first choice, was too slow:
bench scenario (e) saw a country advertising 85% and delivering 20% keep most of a target's
numbers until ``max_numbers`` ran out.) Orders that ended without a code for
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

PRIOR_ORDERS = 4.0  # the advertised rate weighs as much as this many orders seen
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


PROBE_NUMBERS = 3  # numbers a codes target may have waiting in a country it knows nothing of
PER_CODE = 2  # ...and more per code the country brought in the window


def probe_cap(seen: Outcomes) -> int:
    """How many numbers of a codes target may wait at once in a country: a few in one it has
    not tried, and two more per code the country brought.

    A new country's estimate is its advertised rate, which may be far from what it delivers:
    while other countries can be bought, a codes target spreads its first numbers over them
    and learns each one's rate from a few orders, rather than putting them all where the
    price list looks best (planner.py). Room is earned by codes, not by orders: a country
    that flatters its rate ranks first for a while (a prior at 85% needs some 20 orders to
    fall to 30%), and a cap that grew with its misses (twice its results, the first rule) let
    it take a dozen numbers at once; one that delivers earns room as fast as it delivers.
    Where no other country can be bought, the cap is ignored: a single-country target buys
    as fast as it always did.
    """
    return PROBE_NUMBERS + PER_CODE * seen.received


def numbers_in_flight(codes_missing: int, rate: float) -> int:
    """How many numbers to have bought and waiting to expect ``codes_missing`` codes.

    ``codes_missing / rate``, rounded up: on average just enough; more would overshoot the
    codes wanted (numbers whose code comes after the target has its codes are paid for), fewer
    would need another round of waiting.
    """
    if codes_missing <= 0:
        return 0
    return math.ceil(codes_missing / max(rate, FLOOR) - 1e-9)
