"""The provider's behaviour, free of HTTP: orders, codes, cancels, expiry, rate limit and faults."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.ledger import Ledger, OrderState, SandboxOrder, money

API_PREFIX = "/wp-json/legitsms/v2"
Clock = Callable[[], float]
Route = Callable[[int, dict[str, str], float], "Reply"]


class Headers(Protocol):
    """The one thing the simulator asks of request headers (``email.message.Message`` has it)."""

    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True)
class Reply:
    """What the HTTP layer should do with one request."""

    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=UTF-8"
    retry_after: int | None = None
    delay: float = 0.0
    drop: bool = False


def _json(status: int, payload: Any) -> Reply:
    return Reply(status, json.dumps(payload, separators=(",", ":")).encode())


def _error(status: int, code: str, message: str, retry_after: int | None = None) -> Reply:
    payload = {"code": code, "message": message, "data": {"status": status}}
    return Reply(status, _json(status, payload).body, retry_after=retry_after)


_HTML = "text/html; charset=UTF-8"
_HTML_5XX = "<html><head><title>{0} {1}</title></head><body><center><h1>{0} {1}</h1></center>"
_HTML_MAINTENANCE = (
    "<!DOCTYPE html><html><head><title>Maintenance</title></head>"
    "<body><h1>Briefly unavailable for scheduled maintenance. Check back in a minute.</h1>"
    "</body></html>"
)
_NO_ROUTE = "No route was found matching the URL and request method."


class Simulator:
    """The provider's behaviour, free of HTTP: one ``handle`` call per request, under one lock."""

    def __init__(self, config: SandboxConfig, *, clock: Clock = time.time) -> None:
        self.config = config
        self.ledger = Ledger(accounts=len(config.api_keys), balance=config.balance)
        self._lock = self.ledger.lock
        self._clock = clock
        # Two streams, so switching faults on does not change which orders get codes.
        self._rng = random.Random(config.seed)
        self._fault_rng = random.Random(f"faults:{config.seed}")
        self._accounts = {key: index for index, key in enumerate(config.api_keys)}
        self._countries = {country.id: country for country in config.countries}
        self._services = {service.id: service for service in config.services}
        self._stock = {(s.id, c): o.count for s in config.services for c, o in s.offers.items()}
        self._buckets: dict[int, tuple[float, float]] = {}
        self._next_order_id = self._rng.randrange(10_000_000, 90_000_000)
        services = [{"id": str(s.id), "name": s.name} for s in config.services]
        self._services_reply = _json(200, {"status": "success", "services": services})
        self._routes: dict[tuple[str, str], Route] = {
            ("GET", "/balance"): self._balance,
            ("GET", "/services"): lambda account, params, now: self._services_reply,
            ("GET", "/prices"): self._prices,
            ("POST", "/order"): self._order,
            ("GET", "/status"): self._status,
            ("POST", "/set_status"): self._set_status,
        }

    def handle(self, method: str, target: str, body: bytes, headers: Headers) -> Reply:
        """Answer one request; ``target`` is the path with its query string."""
        url = urlsplit(target)
        if not url.path.startswith(API_PREFIX + "/"):
            return self._admin(method, url.path, url.query)
        route = url.path[len(API_PREFIX) :].rstrip("/")
        endpoint, action = f"{method} {route}", self._routes.get((method, route))
        params = _params(url.query, body, headers.get("Content-Type") or "")
        key = headers.get("X-API-KEY") or (params or {}).get("api_key")
        with self._lock:
            now = self._clock()
            if action is None:
                endpoint, reply = "other", _error(404, "rest_no_route", _NO_ROUTE)
            elif (fault := self._upstream_fault()) is not None:
                reply = fault
            else:
                reply = self._act(action, endpoint, params, key, now)
            self.ledger.record(endpoint, 0 if reply.drop else reply.status, now)
            return reply

    def _admin(self, method: str, path: str, query: str) -> Reply:
        if method == "GET" and path == "/_sandbox/ledger":
            return _json(200, self.ledger.snapshot(self._clock()))
        if method == "GET" and path == "/_sandbox/requests":
            offset = _int(dict(parse_qsl(query)).get("offset")) or 0
            return _json(200, self.ledger.requests_json(offset))
        return _error(404, "rest_no_route", _NO_ROUTE)

    def _act(
        self,
        action: Route,
        endpoint: str,
        params: dict[str, str] | None,
        key: str | None,
        now: float,
    ) -> Reply:
        account = self._accounts.get(key) if key else None
        if account is None:
            reply = _error(401, "invalid_key", "Invalid API Key")
        elif (wait := self._throttle(account, now)) is not None:
            reply = _error(429, "rate_limited", "Too many requests", retry_after=wait)
        elif params is None:
            reply = _error(400, "rest_invalid_json", "Invalid JSON body passed.")
        else:
            reply = action(account, params, now)
        config, rng = self.config, self._fault_rng
        # Dropping only a sale that went through is the case that costs money unseen.
        made_order = endpoint == "POST /order" and reply.status == 200
        if made_order and config.fault_drop_order and rng.random() < config.fault_drop_order:
            self.ledger.record_fault("drop_order")
            return Reply(reply.status, drop=True)
        if config.fault_slow and rng.random() < config.fault_slow:
            self.ledger.record_fault("slow")
            return replace(reply, delay=config.slow_seconds)
        return reply

    def _upstream_fault(self) -> Reply | None:
        """Faults of the proxy in front of the provider: they answer without acting."""
        config, rng = self.config, self._fault_rng
        if config.fault_5xx and rng.random() < config.fault_5xx:
            self.ledger.record_fault("5xx")
            status = rng.choice((502, 503))
            page = _HTML_5XX.format(status, HTTPStatus(status).phrase)
            return Reply(status, page.encode(), _HTML)
        if config.fault_429 and rng.random() < config.fault_429:
            self.ledger.record_fault("429")
            return _error(429, "rate_limited", "Too many requests", retry_after=1)
        if config.fault_non_json and rng.random() < config.fault_non_json:
            self.ledger.record_fault("non_json")
            return Reply(200, _HTML_MAINTENANCE.encode(), _HTML)
        return None

    def _throttle(self, account: int, now: float) -> int | None:
        """Token bucket per key holding one second of burst; returns Retry-After seconds."""
        rate = self.config.rate_limit
        if rate <= 0:
            return None
        burst = max(1.0, rate)
        tokens, last = self._buckets.get(account, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - last) * rate)
        if tokens >= 1:
            self._buckets[account] = (tokens - 1, now)
            return None
        self._buckets[account] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / rate))

    def _balance(self, account: int, params: dict[str, str], now: float) -> Reply:
        return _json(200, {"balance": money(self.ledger.balance(account)), "currency": "USD"})

    def _prices(self, account: int, params: dict[str, str], now: float) -> Reply:
        service = self._services.get(_int(params.get("service")) or -1)
        if service is None or not service.offers:
            return _error(400, "missing_params", "Service code required")
        prices = {
            str(cid): {
                "country": self._countries[cid].name,
                "id": cid,
                "cost": float(offer.cost),
                "count": self._stock[service.id, cid],
                "rate": offer.rate,
            }
            for cid, offer in service.offers.items()
        }
        return _json(200, {"status": "success", "prices": prices})

    def _order(self, account: int, params: dict[str, str], now: float) -> Reply:
        if not params.get("service") or not params.get("country"):
            return _error(400, "missing_params", "Country and service required")
        sid, cid = _int(params["service"]), _int(params["country"])
        service = self._services.get(sid) if sid is not None else None
        offer = service.offers.get(cid) if service is not None and cid is not None else None
        if service is None or offer is None or cid is None or self._stock[service.id, cid] <= 0:
            return _error(404, "no_stock", "Out of stock")
        if self.ledger.balance(account) < offer.cost:
            return _error(402, "insufficient_funds", "Balance low")
        rng, config = self._rng, self.config
        never = config.never_ratio if config.never_ratio is not None else offer.never_ratio
        misses = rng.random() < never
        delay = rng.uniform(*config.code_delay)
        order = SandboxOrder(
            order_id=str(self._next_order_id),
            account=account,
            service_id=service.id,
            country_id=cid,
            phone=self._countries[cid].dial_code + str(rng.randrange(2_000_000_000, 9_999_999_999)),
            cost=offer.cost,
            created_at=now,
            expires_at=now + config.expiry,
            code=f"{rng.randrange(1_000_000):06d}",
            # A code due at or after expiry would never be readable: the order has expired.
            code_due_at=None if misses or delay >= config.expiry else now + delay,
        )
        self._next_order_id += 1
        self._stock[service.id, cid] -= 1
        self.ledger.charge(order)
        return _json(
            200,
            {
                "status": "success",
                "order_id": order.order_id,
                "phone": order.phone,
                "cost": float(order.cost),
                "msg": "Waiting for SMS",
            },
        )

    def _mine(self, account: int, order_id: str) -> SandboxOrder | None:
        order = self.ledger.order(order_id)
        return order if order is not None and order.account == account else None

    def _status(self, account: int, params: dict[str, str], now: float) -> Reply:
        if not params.get("order_id"):
            return _error(400, "missing_params", "Order ID required")
        order = self._mine(account, params["order_id"])
        if order is None:
            return _error(404, "not_found", "Order not found")
        if order.code_available_at(now) is None:
            return _json(200, {"status": "STATUS_WAIT_CODE"})
        if order.code_read_at is None:
            order.code_read_at = now
        return _json(200, {"status": "STATUS_OK", "code": order.code})

    def _set_status(self, account: int, params: dict[str, str], now: float) -> Reply:
        if not params.get("order_id") or params.get("status") != "8":
            return _error(400, "missing_params", "Order ID and status 8 required")
        order = self._mine(account, params["order_id"])
        if order is None:
            return _error(404, "not_found", "Order not found")
        state = order.state(now)
        if state is OrderState.RECEIVED:
            return _error(400, "cannot_cancel", "Code already received")
        if state is not OrderState.WAITING:
            return _error(400, "cancel_failed", "Order expired or already finished")
        if now - order.created_at < self.config.cancel_min_age:
            return _error(400, "cancel_failed", "Order cannot be cancelled yet")
        self.ledger.refund(order, now)
        return _json(200, {"status": "success", "message": "Order cancelled and refunded"})


def _int(value: str | None) -> int | None:
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() else None


def _params(query: str, body: bytes, content_type: str) -> dict[str, str] | None:
    """Query string merged with a form or JSON body, as WordPress does; None for bad JSON."""
    params = dict(parse_qsl(query, keep_blank_values=True))
    if not body.strip():
        return params
    if "json" in content_type or body.lstrip().startswith(b"{"):
        try:
            decoded = json.loads(body)
        except ValueError:
            return None
        if not isinstance(decoded, dict):
            return None
        params.update({str(k): str(v) for k, v in decoded.items() if v is not None})
    else:
        params.update(parse_qsl(body.decode("latin-1"), keep_blank_values=True))
    return params
