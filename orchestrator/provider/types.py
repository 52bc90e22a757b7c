"""What the provider answers, as typed values: the vocabulary shared by client, spec and planner."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True)
class Service:
    """One app the provider sells numbers for (``GET /services``)."""

    id: int
    name: str


@dataclass(frozen=True)
class Price:
    """Live price, stock and success rate of one country for a service (``GET /prices``)."""

    country_id: int
    country: str
    cost: Decimal
    count: int
    rate: int


@dataclass(frozen=True)
class Order:
    """A number bought (``POST /order``)."""

    order_id: str
    phone: str
    cost: Decimal


@dataclass(frozen=True)
class CodeStatus:
    """The answer of ``GET /status``: a code, or ``None`` while still waiting."""

    code: str | None


class Catalog(Protocol):
    """The read-only part of the provider a job file is resolved against."""

    def services(self) -> list[Service]: ...

    def prices(self, service_id: int) -> dict[int, Price]: ...
