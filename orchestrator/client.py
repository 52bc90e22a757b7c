"""The LegitSMS V2 HTTP client: one method per endpoint, typed errors, per-endpoint retries."""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn, Protocol

import httpx
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from orchestrator.errors import (
    REJECTIONS,
    MalformedResponse,
    NotSent,
    OutcomeUnknown,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    Throttled,
    TransportError,
)
from orchestrator.provider import CodeStatus, Order, Price, Service
from orchestrator.ratelimit import Priority

log = structlog.get_logger(__name__)

CANCEL_STATUS = "8"  # the reference's status value for "cancel and refund"
RETRYABLE_STATUSES = frozenset({502, 503, 504})
USER_AGENT = "legitsms-orchestrator"


class Throttle(Protocol):
    """The shared rate limit, as the client sees it (see ratelimit.SharedRateLimiter)."""

    def acquire(self, priority: Priority) -> None: ...

    def pause(self, seconds: float) -> None: ...


def _replay_is_safe(exc: BaseException) -> bool:
    """Reads and cancels: a replay cannot charge money, so retry any blip."""
    if isinstance(exc, Throttled):
        return False  # our own limiter says wait long: a delayed message, not a sleep
    if isinstance(exc, ProviderUnavailable):
        return exc.status in RETRYABLE_STATUSES
    # A non-JSON page (a proxy's maintenance notice) is a blip too; a JSON body lacking a
    # field is not, but replaying a read costs only a request, so both are retried.
    return isinstance(exc, TransportError | RateLimited | MalformedResponse)


def _provably_unsent(exc: BaseException) -> bool:
    """POST /order: retry only what never reached the provider, or what it refused with 429."""
    if isinstance(exc, Throttled):
        return False
    return isinstance(exc, NotSent | RateLimited)


class LegitSMSClient:
    """Talks to one LegitSMS account over one pooled HTTP connection set."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        throttle: Throttle | None = None,
        attempts: int = 4,
        max_retry_seconds: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._throttle = throttle
        self._attempts = attempts
        self._max_retry_seconds = max_retry_seconds
        # Requests go straight to the transport: the Client around it (cookie jar, auth,
        # redirects, URL merging) cost as much CPU per call as the connection itself, and the
        # API needs none of it.
        self._base_url = base_url.rstrip("/")
        # The key travels in this header only: never in a URL, which httpx may log.
        self._headers = httpx.Headers(
            {"X-API-KEY": api_key, "Accept": "application/json", "User-Agent": USER_AGENT}
        )
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
        self._extensions = {"timeout": timeout.as_dict()}
        self._transport = transport or httpx.HTTPTransport(
            proxy=proxy_for(self._base_url),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    def __repr__(self) -> str:
        return f"LegitSMSClient(base_url={self._base_url!r})"

    def close(self) -> None:
        """Close the pooled connections."""
        self._transport.close()

    def __enter__(self) -> LegitSMSClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- endpoints ---------------------------------------------------------------------------

    def balance(self) -> Decimal:
        """``GET /balance``: the wallet balance."""
        body = self._call("GET", "/balance", Priority.POLL)
        return _money(body, "balance")

    def services(self) -> list[Service]:
        """``GET /services``: every app the provider sells numbers for."""
        body = self._call("GET", "/services", Priority.POLL)
        rows = _field(body, "services", list)
        try:
            return [Service(id=int(row["id"]), name=str(row["name"])) for row in rows]
        except (KeyError, TypeError, ValueError) as exc:
            raise MalformedResponse(f"/services: bad service entry ({exc!r})") from None

    def prices(self, service_id: int) -> dict[int, Price]:
        """``GET /prices``: live price, stock and success rate per country for a service."""
        body = self._call("GET", "/prices", Priority.ORDER, params={"service": service_id})
        table = _field(body, "prices", dict)
        prices: dict[int, Price] = {}
        try:
            for key, row in table.items():
                country_id = int(row.get("id", key))
                prices[country_id] = Price(
                    country_id=country_id,
                    country=str(row["country"]),
                    cost=_money(row, "cost"),
                    count=int(row["count"]),
                    rate=int(row["rate"]),
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MalformedResponse(f"/prices: bad price entry ({exc!r})") from None
        return prices

    def order(self, service_id: int, country_id: int, *, slot_acquired: bool = False) -> Order:
        """``POST /order``: buy a number. Sent once unless it provably never left.

        ``slot_acquired`` says the caller already took a rate-limit slot for the first attempt
        (it does so before claiming the slot, so a busy limit never churns claims).
        """
        body = self._call(
            "POST",
            "/order",
            Priority.ORDER,
            data={"service": service_id, "country": country_id},
            replay_safe=False,
            slot_acquired=slot_acquired,
        )
        return Order(
            order_id=str(_field(body, "order_id", str | int)),
            phone=str(_field(body, "phone", str | int)),
            cost=_money(body, "cost"),
        )

    def status(self, order_id: str, *, priority: Priority = Priority.POLL) -> CodeStatus:
        """``GET /status``: the code, or ``CodeStatus(None)`` while still waiting.

        A read that settles a refused cancel is part of that cancel: it passes
        ``Priority.CANCEL``, so polls crowding the limit cannot hold it up.
        """
        body = self._call("GET", "/status", priority, params={"order_id": order_id})
        state = _field(body, "status", str)
        if state == "STATUS_OK":
            return CodeStatus(code=str(_field(body, "code", str | int)))
        if state == "STATUS_WAIT_CODE":
            return CodeStatus(code=None)
        raise MalformedResponse(f"/status: unknown status {state!r}")

    def cancel(self, order_id: str, *, priority: Priority = Priority.CANCEL) -> None:
        """``POST /set_status`` with status 8: cancel an order for a refund.

        A cancel sent again after a refusal, while the order is far from its expiry, passes
        ``Priority.POLL``: it must not crowd out other jobs' work (see settle.py).
        """
        self._call(
            "POST",
            "/set_status",
            priority,
            data={"order_id": order_id, "status": CANCEL_STATUS},
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        priority: Priority,
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        replay_safe: bool = True,
        slot_acquired: bool = False,
    ) -> dict[str, Any]:
        attempts: list[str] = []  # what each earlier attempt ended as, for ProviderRejected

        def attempt() -> dict[str, Any]:
            if attempts:
                log.info("provider_retry", endpoint=path, attempt=len(attempts) + 1)
            try:
                throttled = not (slot_acquired and not attempts)
                return self._send_once(method, path, priority, params, data, throttled)
            except ProviderRejected as exc:
                # A cancel replayed after a lost answer may meet the effect of its own first try.
                exc.replayed = any(a == "unknown" for a in attempts)
                raise
            except (OutcomeUnknown, ProviderUnavailable, MalformedResponse):
                attempts.append("unknown")
                raise
            except ProviderError:
                attempts.append("refused")
                raise

        retrying = Retrying(
            retry=retry_if_exception(_replay_is_safe if replay_safe else _provably_unsent),
            stop=stop_after_attempt(self._attempts) | stop_after_delay(self._max_retry_seconds),
            wait=self._wait,
            reraise=True,
        )
        return retrying(attempt)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and self._throttle is None:
            return min(exc.retry_after, self._max_retry_seconds)
        # With a throttle, its pause already makes the next acquire wait.
        return float(wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2)(state))

    def _send_once(
        self,
        method: str,
        path: str,
        priority: Priority,
        params: dict[str, Any] | None,
        data: dict[str, Any] | None,
        throttled: bool,
    ) -> dict[str, Any]:
        if throttled and self._throttle is not None:
            self._throttle.acquire(priority)
        request = httpx.Request(
            method,
            self._base_url + path,
            params=params,
            data=data,
            headers=self._headers,
            extensions=self._extensions,
        )
        try:
            response = self._transport.handle_request(request)
            try:
                response.read()
            finally:
                response.close()
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise NotSent(f"{path}: could not connect ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise OutcomeUnknown(f"{path}: no answer ({type(exc).__name__})") from None
        return self._decode(path, response)

    def _decode(self, path: str, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        if status == 429:
            retry_after = _retry_after(response)
            if self._throttle is not None:
                self._throttle.pause(retry_after)
            log.warning("provider_rate_limited", endpoint=path, retry_after=retry_after)
            raise RateLimited(retry_after)
        if status >= 500:
            raise ProviderUnavailable(status)
        try:
            body = json.loads(response.content, parse_float=Decimal, parse_constant=_not_json)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            kind = response.headers.get("content-type", "no content type")
            raise MalformedResponse(f"{path}: HTTP {status} answer is not JSON ({kind})") from None
        if not isinstance(body, dict):
            raise MalformedResponse(f"{path}: HTTP {status} answer is not a JSON object")
        if status >= 400:
            code = body.get("code")
            if not isinstance(code, str):
                raise MalformedResponse(f"{path}: HTTP {status} error without a code")
            message = str(body.get("message", ""))
            cls = REJECTIONS.get(code, ProviderRejected)
            raise cls(message, status=status, code=code)
        return body


def proxy_for(url: str) -> str | None:
    """The proxy the environment (``HTTPS_PROXY``, ``NO_PROXY``...) names for ``url``, if any."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or (parts.hostname and urllib.request.proxy_bypass(parts.hostname)):
        return None
    return proxy


def _retry_after(response: httpx.Response) -> float:
    """Seconds from a Retry-After header; 2 s (the provider's usual spacing) when unreadable."""
    try:
        seconds = float(response.headers.get("retry-after", "2"))
    except ValueError:
        return 2.0
    # "inf" and "nan" parse as floats, but no caller can wait (or build a timedelta) from them.
    return max(0.0, seconds) if math.isfinite(seconds) else 2.0


def _not_json(constant: str) -> NoReturn:
    """Refuse NaN and Infinity, which Python's json accepts but JSON does not."""
    raise ValueError(f"{constant} is not JSON")


def _field(body: dict[str, Any], name: str, kind: Any) -> Any:
    value = body.get(name)
    if value is None or not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedResponse(f"answer lacks a valid {name!r} field")
    if isinstance(value, str) and not value.strip():
        # An empty order id or code cannot be polled, cancelled or used: as good as missing.
        raise MalformedResponse(f"answer has an empty {name!r} field")
    return value


def _money(body: dict[str, Any], name: str) -> Decimal:
    value = body.get(name)
    if isinstance(value, bool) or value is None:
        raise MalformedResponse(f"answer lacks a valid {name!r} amount")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise MalformedResponse(f"answer has a non-numeric {name!r}: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise MalformedResponse(f"answer has an invalid {name!r}: {value!r}")
    return amount
