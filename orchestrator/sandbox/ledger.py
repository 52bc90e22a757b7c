"""The sandbox's books: wallets, orders, money totals and the request log, safe across threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

_CENT = Decimal("0.01")


def money(amount: Decimal) -> str:
    """Dollars as the provider writes them: a string with two decimals."""
    return str(amount.quantize(_CENT))


class OrderState(StrEnum):
    """Where an order stands at a given moment; derived from its timestamps, never stored."""

    WAITING = "waiting"
    RECEIVED = "received"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


@dataclass(slots=True)
class SandboxOrder:
    """One number sold; ``account`` is the key's position in the config, never the key itself."""

    order_id: str
    account: int
    service_id: int
    country_id: int
    phone: str
    cost: Decimal
    created_at: float
    expires_at: float
    # Drawn at purchase so a seed fixes it, but revealed only once due.
    code: str
    # None: this order never gets a code. Always before expires_at when set.
    code_due_at: float | None
    code_read_at: float | None = None
    cancelled_at: float | None = None
    refunded: bool = False

    def state(self, now: float) -> OrderState:
        """The state at ``now``; a cancel is accepted only while waiting, so it outranks all."""
        if self.cancelled_at is not None:
            return OrderState.CANCELLED
        if self.code_due_at is not None and self.code_due_at <= now:
            return OrderState.RECEIVED
        if now >= self.expires_at:
            return OrderState.EXPIRED
        return OrderState.WAITING

    def code_available_at(self, now: float) -> float | None:
        """When the code became readable, or None if it has not (and, once final, never will)."""
        if self.state(now) is OrderState.RECEIVED:
            return self.code_due_at
        return None

    def to_json(self, now: float) -> dict[str, Any]:
        """The order as the admin endpoint shows it; the code only once it has arrived."""
        available = self.code_available_at(now)
        return {
            "order_id": self.order_id,
            "account": self.account,
            "service_id": self.service_id,
            "country_id": self.country_id,
            "phone": self.phone,
            "cost": money(self.cost),
            "created_at": self.created_at,
            "code": self.code if available is not None else None,
            "code_available_at": available,
            "code_read_at": self.code_read_at,
            "state": self.state(now).value,
            "refunded": self.refunded,
            "cancelled_at": self.cancelled_at,
        }


class Ledger:
    """Balances, orders, totals and traffic of one sandbox; every method is thread-safe.

    ``lock`` is re-entrant so the simulator can hold it across a check-then-act (stock,
    balance, charge) while the methods it calls take it again.
    """

    def __init__(self, *, accounts: int, balance: Decimal) -> None:
        self.lock = threading.RLock()
        self._balances = [balance] * accounts
        self._orders: dict[str, SandboxOrder] = {}
        self._charged = Decimal(0)
        self._refunded = Decimal(0)
        self._counts: dict[str, int] = {}
        self._log: list[tuple[float, str, int]] = []
        self._faults: dict[str, int] = {}
        self._rate_limited = 0

    def balance(self, account: int | None = None) -> Decimal:
        """One account's balance, or the sum over all accounts."""
        with self.lock:
            return sum(self._balances, Decimal(0)) if account is None else self._balances[account]

    def order(self, order_id: str) -> SandboxOrder | None:
        """The order with that id, or None."""
        with self.lock:
            return self._orders.get(order_id)

    def orders(self) -> list[SandboxOrder]:
        """Every order, oldest first (a copy of the list; the orders themselves are live)."""
        with self.lock:
            return list(self._orders.values())

    def charge(self, order: SandboxOrder) -> None:
        """Record a sale: take its cost from the buyer's balance."""
        with self.lock:
            self._balances[order.account] -= order.cost
            self._charged += order.cost
            self._orders[order.order_id] = order

    def refund(self, order: SandboxOrder, now: float) -> None:
        """Record a cancel: give the cost back to the buyer."""
        with self.lock:
            order.cancelled_at = now
            order.refunded = True
            self._balances[order.account] += order.cost
            self._refunded += order.cost

    def record(self, endpoint: str, status: int, now: float) -> None:
        """Count one API request; status 0 means the connection was dropped unanswered."""
        with self.lock:
            self._counts[endpoint] = self._counts.get(endpoint, 0) + 1
            self._log.append((now, endpoint, status))
            if status == 429:
                self._rate_limited += 1

    def record_fault(self, kind: str) -> None:
        """Count one injected fault by kind (5xx, 429, slow, non_json, drop_order)."""
        with self.lock:
            self._faults[kind] = self._faults.get(kind, 0) + 1

    def requests(self) -> list[tuple[float, str, int]]:
        """The request log, as (wall time, endpoint, HTTP status)."""
        with self.lock:
            return list(self._log)

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything above as JSON-ready data, money as strings."""
        with self.lock:
            orders = [order.to_json(now) for order in self._orders.values()]
            states = {state.value: 0 for state in OrderState}
            for order in orders:
                states[order["state"]] += 1
            return {
                "now": now,
                "balance": money(self.balance()),
                "balances": [money(balance) for balance in self._balances],
                "currency": "USD",
                "totals": {
                    "charged": money(self._charged),
                    "refunded": money(self._refunded),
                    "net_spend": money(self._charged - self._refunded),
                },
                "order_states": states,
                "requests": dict(self._counts),
                "rate_limited": self._rate_limited,
                "faults": dict(self._faults),
                "request_log_size": len(self._log),
                "orders": orders,
            }

    def requests_json(self, offset: int = 0) -> dict[str, Any]:
        """The request log from ``offset`` on, JSON-ready, with the offset to ask for next."""
        offset = max(offset, 0)
        with self.lock:
            entries = self._log[offset:]
            return {
                "next_offset": offset + len(entries),
                "requests": [
                    {"at": at, "endpoint": endpoint, "status": status}
                    for at, endpoint, status in entries
                ],
            }
