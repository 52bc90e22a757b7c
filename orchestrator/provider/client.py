"""The LegitSMS V2 HTTP client: one method per endpoint, typed errors, per-endpoint retries.

What an answer must hold is checked in ``answers``; which failures are retried is decided in
``retries``; the bounded read of an answer's bytes is in ``transport``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol, TypeVar

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
)
from orchestrator.metrics import PROVIDER_429, PROVIDER_SECONDS, endpoint
from orchestrator.provider.answers import (
    NOT_JSON,
    load_json,
    message_of,
    parse_balance,
    parse_cancel,
    parse_order,
    parse_prices,
    parse_services,
    parse_status,
    shown,
    usable_order_id,
)
from orchestrator.provider.ratelimit import Priority
from orchestrator.provider.retries import (
    PATIENCE,
    RETRY_AFTER_CAP,
    cancel_again,
    provably_unsent,
    read_again,
    retry_after_seconds,
)
from orchestrator.provider.transport import MAX_RESPONSE_BYTES, proxy_for, read_bounded
from orchestrator.provider.types import CodeStatus, Order, Price, Service

log = structlog.get_logger(__name__)

CANCEL_STATUS = "8"  # the reference's status value for "cancel and refund"
USER_AGENT = "legitsms-orchestrator"

# What a failed connection or a refused key most likely means, and the setting to look at.
KEY_SETTING = "LEGITSMS_API_KEY"
BASE_URL_SETTING = "LEGITSMS_BASE_URL"
KEY_REFUSED = frozenset({401, 403})
LOOPBACK = frozenset({"localhost", "::1"})  # and 127.0.0.0/8: where the sandbox runs

T = TypeVar("T")
Parse = Callable[[int, dict[str, Any]], T]


class Throttle(Protocol):
    """The shared rate limit, as the client sees it (see ratelimit.SharedRateLimiter)."""

    def acquire(self, priority: Priority) -> None: ...

    def pause(self, seconds: float) -> None: ...


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
        patience: float = PATIENCE,
        retry_after_cap: float = RETRY_AFTER_CAP,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``attempts`` bounds the attempts of any call. ``POST /order`` retries (only what
        provably never left) within ``max_retry_seconds``. Reads and cancels may begin another
        attempt while the one that failed began less than ``patience`` seconds after the
        first, so one slow answer never uses the patience up. A 429's Retry-After is cut to
        ``retry_after_cap`` seconds. An answer longer than ``max_response_bytes`` (once
        decompressed) is read no further and raises ``MalformedResponse``."""
        self._throttle = throttle
        self._attempts = attempts
        self._max_retry_seconds = max_retry_seconds
        self._patience = patience
        self._retry_after_cap = retry_after_cap
        self._max_response_bytes = max_response_bytes
        self._max_backoff = max(2.0, patience / 8)
        # Requests go straight to the transport: the Client around it (cookie jar, auth,
        # redirects, URL merging) cost as much CPU per call as the connection itself, and the
        # API needs none of it.
        self._base_url = base_url.rstrip("/")
        url = httpx.URL(self._base_url)
        # Named in connection errors: without any user or password the URL may hold.
        self._where = str(url.copy_with(username=None, password=None, query=None))
        self._connect_hint = (
            "is `orchestrator sandbox` running?"
            if url.host in LOOPBACK or url.host.startswith("127.")
            else f"check {BASE_URL_SETTING} and the network"
        )
        # The key travels in this header only: never in a URL, which httpx may log.
        # Answers are asked for uncompressed: a compressed one could hide any size.
        self._headers = httpx.Headers(
            {
                "X-API-KEY": api_key,
                "Accept": "application/json",
                "Accept-Encoding": "identity",
                "User-Agent": USER_AGENT,
            }
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
        return self._call("GET", "/balance", Priority.POLL, parse_balance)

    def services(self) -> list[Service]:
        """``GET /services``: every app the provider sells numbers for."""
        return self._call("GET", "/services", Priority.POLL, parse_services)

    def prices(self, service_id: int) -> dict[int, Price]:
        """``GET /prices``: live price, stock and success rate per country for a service."""
        return self._call(
            "GET", "/prices", Priority.ORDER, parse_prices, params={"service": service_id}
        )

    def order(self, service_id: int, country_id: int, *, slot_acquired: bool = False) -> Order:
        """``POST /order``: buy a number. Sent once unless it provably never left.

        ``slot_acquired`` says the caller already took a rate-limit slot for the first attempt
        (it does so before claiming the slot, so a busy limit never churns claims).

        An answer naming a usable order id is never lost, whatever its HTTP status: if the
        rest of it cannot be used, ``UnpricedOrder`` (the cost) or ``UnusableOrder`` (the
        phone, an error code beside it, or a status other than 2xx) carries the id, for the
        caller to record the order and cancel it. An answer longer than the bound is not read
        through: ``MalformedResponse``, in doubt.
        """
        return self._call(
            "POST",
            "/order",
            Priority.ORDER,
            parse_order,
            data={"service": service_id, "country": country_id},
            again=provably_unsent,
            slot_acquired=slot_acquired,
        )

    def status(self, order_id: str, *, priority: Priority = Priority.POLL) -> CodeStatus:
        """``GET /status``: the code, or ``CodeStatus(None)`` while still waiting.

        A read that settles a refused cancel is part of that cancel: it passes
        ``Priority.CANCEL``, so polls crowding the limit cannot hold it up.
        """
        return self._call("GET", "/status", priority, parse_status, params={"order_id": order_id})

    def cancel(self, order_id: str) -> None:
        """``POST /set_status`` with status 8: cancel an order for a refund.

        Returns only for the documented success (``"status": "success"``). A documented
        refusal raises its class whatever the HTTP status (a 200 ``cancel_failed`` is a
        ``CancelFailed``); any other answer raises ``MalformedResponse`` and is not resent.
        """
        self._call(
            "POST",
            "/set_status",
            Priority.CANCEL,
            parse_cancel,
            data={"order_id": order_id, "status": CANCEL_STATUS},
            again=cancel_again,
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        priority: Priority,
        parse: Parse[T],
        *,
        params: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        again: Callable[[BaseException], bool] = read_again,
        slot_acquired: bool = False,
    ) -> T:
        attempts: list[str] = []  # what each earlier attempt ended as, for ProviderRejected
        started: list[float] = []  # when each attempt began

        def attempt() -> T:
            if attempts:
                log.info("provider_retry", endpoint=path, attempt=len(attempts) + 1)
            started.append(time.monotonic())
            try:
                throttled = not (slot_acquired and not attempts)
                status, body = self._send_once(method, path, priority, params, data, throttled)
                # Inside the attempt: what the body says is judged by the same retry policy,
                # and a refusal in a 2xx body is marked replayed like one in a 4xx.
                return parse(status, body)
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

        def patience_spent(state: RetryCallState) -> bool:
            # Measured to the start of the attempt that failed, not to its end: a single
            # answer slower than the patience (a read timeout) is still followed by a retry.
            return started[-1] - started[0] >= self._patience

        if again is provably_unsent:
            # POST /order keeps its short window: claim_lease is sized from it.
            stop: Any = stop_after_delay(self._max_retry_seconds)
        else:
            stop = patience_spent
        retrying = Retrying(
            retry=retry_if_exception(again),
            stop=stop_after_attempt(self._attempts) | stop,
            wait=self._wait,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except (NotSent, RateLimited) as exc:
            if again is cancel_again and "unknown" in attempts:
                # The last try never reached the provider, but an earlier one did and its
                # answer was lost: that cancel may have acted (and refunded). A read's lost
                # answer changes nothing: it keeps its Throttled, to wait its turn.
                raise OutcomeUnknown(f"{path}: an earlier try got no answer; then {exc}") from exc
            raise

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RateLimited) and self._throttle is None:
            return min(exc.retry_after, self._max_retry_seconds)
        # With a throttle, its pause already makes the next acquire wait.
        backoff = wait_exponential_jitter(multiplier=0.2, max=self._max_backoff, jitter=0.2)
        return float(backoff(state))

    def _send_once(
        self,
        method: str,
        path: str,
        priority: Priority,
        params: dict[str, Any] | None,
        data: dict[str, Any] | None,
        throttled: bool,
    ) -> tuple[int, dict[str, Any]]:
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
        sent = time.monotonic()
        try:
            response = self._transport.handle_request(request)
            try:
                content = read_bounded(path, response, self._max_response_bytes)
            finally:
                response.close()  # mid-answer, this drops the connection instead of draining it
                PROVIDER_SECONDS.labels(endpoint(path)).observe(time.monotonic() - sent)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise NotSent(
                f"{path}: could not connect to {self._where} ({type(exc).__name__}); "
                f"{self._connect_hint}"
            ) from None
        except httpx.TransportError as exc:
            raise OutcomeUnknown(f"{path}: no answer ({type(exc).__name__})") from None
        except httpx.DecodingError:
            # An answer came, compressed in a way that does not decompress: what it said is
            # unknown (for an order: in doubt).
            raise MalformedResponse(
                f"{path}: answer cannot be decoded (broken content encoding)"
            ) from None
        return response.status_code, self._decode(path, response, content, path == "/order")

    def _decode(
        self, path: str, response: httpx.Response, content: bytes | None, names_order: bool
    ) -> dict[str, Any]:
        """The answer's JSON object (``content`` None: longer than the bound), or the error
        it stands for.

        With ``names_order`` (POST /order), an object naming a usable order id is returned
        whatever the HTTP status, even a 429 or a 5xx: the number may have been bought, and
        ``parse_order`` turns any answer but a 2xx success into an ``UnusableOrder``.
        """
        status = response.status_code
        refusal: RateLimited | None = None
        if status == 429:
            PROVIDER_429.labels(endpoint(path)).inc()
            header = response.headers.get("retry-after")
            retry_after = min(retry_after_seconds(header), self._retry_after_cap)
            if self._throttle is not None:
                self._throttle.pause(retry_after)
            log.warning(
                "provider_rate_limited",
                endpoint=path,
                retry_after=retry_after,
                retry_after_header=None if header is None else shown(header),
            )
            refusal = RateLimited(retry_after)
        refused = refusal is not None or status >= 500
        skip = content is None or (refused and not names_order)
        body = NOT_JSON if skip else load_json(content or b"")
        if (
            names_order
            and isinstance(body, dict)
            and usable_order_id(body.get("order_id")) is not None
        ):
            return body
        if refusal is not None:
            raise refusal
        if status >= 500:
            raise ProviderUnavailable(status)
        if content is None:
            raise MalformedResponse(
                f"{path}: HTTP {status} answer larger than {self._max_response_bytes} bytes"
            )
        if body is NOT_JSON:
            kind = shown(response.headers.get("content-type", "no content type"))
            raise MalformedResponse(f"{path}: HTTP {status} answer is not JSON ({kind})")
        if not isinstance(body, dict):
            raise MalformedResponse(f"{path}: HTTP {status} answer is not a JSON object")
        if status >= 400:
            code = body.get("code")
            if not isinstance(code, str):
                raise MalformedResponse(f"{path}: HTTP {status} error without a code")
            cls = REJECTIONS.get(code, ProviderRejected)
            message = message_of(body)
            if status in KEY_REFUSED:
                message += f" ({self._where}: check {KEY_SETTING})"
            raise cls(message, status=status, code=shown(code))
        return body
