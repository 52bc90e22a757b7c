"""The LegitSMS V2 HTTP client: one method per endpoint, typed errors, per-endpoint retries."""

from __future__ import annotations

import json
import math
import reprlib
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
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
    Throttled,
    TransportError,
    UnpricedOrder,
    UnusableOrder,
)
from orchestrator.provider.ratelimit import Priority
from orchestrator.provider.types import CodeStatus, Order, Price, Service

log = structlog.get_logger(__name__)

CANCEL_STATUS = "8"  # the reference's status value for "cancel and refund"
RETRYABLE_STATUSES = frozenset({502, 503, 504})
USER_AGENT = "legitsms-orchestrator"
RETRY_AFTER_CAP = 120.0  # seconds: the longest one 429 may hold every process on the key
PATIENCE = 10.0  # seconds during which a read or a cancel may begin another attempt
# No number costs a million dollars; in micro-dollars that is 1e12, far inside a BIGINT even
# summed over every slot of a job. A cost above it is as unusable as a negative one.
MAX_COST = Decimal(1_000_000)
# A wallet beyond a trillion dollars is a broken answer, and a balance with an exponent in the
# millions would overflow the first sum it took part in.
MAX_BALANCE = Decimal(10**12)
MAX_ID = 2**31 - 1  # service and country ids are stored in INTEGER columns
MAX_COUNT = 2**63 - 1
MAX_ORDER_ID_LENGTH = 64  # an order id is a key: it is stored under a unique index
MAX_PHONE_LENGTH = 32
SHOWN = 80  # characters of an unusable provider value quoted in an error message
# The most of one answer that is read: the largest documented answer (/services, /prices of a
# service sold in every country) is tens of kilobytes. A longer answer is not kept in memory.
MAX_RESPONSE_BYTES = 1024 * 1024

T = TypeVar("T")
Parse = Callable[[int, dict[str, Any]], T]


class Throttle(Protocol):
    """The shared rate limit, as the client sees it (see ratelimit.SharedRateLimiter)."""

    def acquire(self, priority: Priority) -> None: ...

    def pause(self, seconds: float) -> None: ...


def _read_again(exc: BaseException) -> bool:
    """Reads: a replay cannot charge money, so retry any blip."""
    if isinstance(exc, Throttled):
        return False  # our own limiter says wait long: a delayed message, not a sleep
    if isinstance(exc, ProviderUnavailable):
        return exc.status in RETRYABLE_STATUSES
    # A non-JSON page (a proxy's maintenance notice) is a blip too; a JSON body lacking a
    # field is not, but replaying a read costs only a request, so both are retried.
    return isinstance(exc, TransportError | RateLimited | MalformedResponse)


def _cancel_again(exc: BaseException) -> bool:
    """POST /set_status: a replay is safe when the first try never acted or got no answer.

    An answer that came back and is not the documented success (MalformedResponse) is not
    replayed: the cancel may have acted, and settle reconciles it by reading /status. After a
    lost answer (OutcomeUnknown, 502/503/504) the replay's refusal is marked ``replayed``.
    """
    if isinstance(exc, MalformedResponse):
        return False
    return _read_again(exc)


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
        return self._call("GET", "/balance", Priority.POLL, _parse_balance)

    def services(self) -> list[Service]:
        """``GET /services``: every app the provider sells numbers for."""
        return self._call("GET", "/services", Priority.POLL, _parse_services)

    def prices(self, service_id: int) -> dict[int, Price]:
        """``GET /prices``: live price, stock and success rate per country for a service."""
        return self._call(
            "GET", "/prices", Priority.ORDER, _parse_prices, params={"service": service_id}
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
            _parse_order,
            data={"service": service_id, "country": country_id},
            again=_provably_unsent,
            slot_acquired=slot_acquired,
        )

    def status(self, order_id: str, *, priority: Priority = Priority.POLL) -> CodeStatus:
        """``GET /status``: the code, or ``CodeStatus(None)`` while still waiting.

        A read that settles a refused cancel is part of that cancel: it passes
        ``Priority.CANCEL``, so polls crowding the limit cannot hold it up.
        """
        return self._call("GET", "/status", priority, _parse_status, params={"order_id": order_id})

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
            _parse_cancel,
            data={"order_id": order_id, "status": CANCEL_STATUS},
            again=_cancel_again,
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
        again: Callable[[BaseException], bool] = _read_again,
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

        if again is _provably_unsent:
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
        return retrying(attempt)

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
        try:
            response = self._transport.handle_request(request)
            try:
                content = _read_bounded(path, response, self._max_response_bytes)
            finally:
                response.close()  # mid-answer, this drops the connection instead of draining it
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise NotSent(f"{path}: could not connect ({type(exc).__name__})") from None
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
        ``_parse_order`` turns any answer but a 2xx success into an ``UnusableOrder``.
        """
        status = response.status_code
        refusal: RateLimited | None = None
        if status == 429:
            header = response.headers.get("retry-after")
            retry_after = min(_retry_after(header), self._retry_after_cap)
            if self._throttle is not None:
                self._throttle.pause(retry_after)
            log.warning(
                "provider_rate_limited",
                endpoint=path,
                retry_after=retry_after,
                retry_after_header=None if header is None else _shown(header),
            )
            refusal = RateLimited(retry_after)
        refused = refusal is not None or status >= 500
        skip = content is None or (refused and not names_order)
        body = _NOT_JSON if skip else _load(content or b"")
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
        if body is _NOT_JSON:
            kind = _shown(response.headers.get("content-type", "no content type"))
            raise MalformedResponse(f"{path}: HTTP {status} answer is not JSON ({kind})")
        if not isinstance(body, dict):
            raise MalformedResponse(f"{path}: HTTP {status} answer is not a JSON object")
        if status >= 400:
            code = body.get("code")
            if not isinstance(code, str):
                raise MalformedResponse(f"{path}: HTTP {status} error without a code")
            cls = REJECTIONS.get(code, ProviderRejected)
            raise cls(_message(body), status=status, code=_shown(code))
        return body


def _read_bounded(path: str, response: httpx.Response, limit: int) -> bytes | None:
    """The answer's body, decompressed; None once it grows past ``limit`` bytes, having read
    only about that much. A gzip or deflate body is inflated a bounded piece at a time, so a
    small compressed answer cannot expand to gigabytes either."""
    if response.is_stream_consumed:  # already in memory (an httpx.MockTransport answer)
        return response.content if len(response.content) <= limit else None
    codings = [
        coding.strip().lower()
        for coding in response.headers.get("content-encoding", "").split(",")
        if coding.strip().lower() not in ("", "identity")
    ]
    inflater = None
    if codings in (["gzip"], ["x-gzip"], ["deflate"]):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header
    elif codings:
        raise MalformedResponse(f"{path}: answer in an unsupported encoding {_shown(codings)}")
    chunks: list[bytes] = []
    size = 0
    try:
        for raw in response.iter_raw():
            pending = raw
            while pending:
                if inflater is None:
                    piece, pending = pending, b""
                else:
                    piece = inflater.decompress(pending, limit - size + 1)
                    pending = inflater.unconsumed_tail
                size += len(piece)
                if size > limit:
                    return None
                chunks.append(piece)
    except zlib.error:
        raise MalformedResponse(
            f"{path}: answer cannot be decoded (broken content encoding)"
        ) from None
    return b"".join(chunks)


def proxy_for(url: str) -> str | None:
    """The proxy the environment (``HTTPS_PROXY``, ``NO_PROXY``...) names for ``url``, if any."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or (parts.hostname and urllib.request.proxy_bypass(parts.hostname)):
        return None
    return proxy


def _retry_after(header: str | None) -> float:
    """Seconds from a Retry-After header; 2 s (the provider's usual spacing) when unreadable."""
    try:
        seconds = float(header if header is not None else "2")
    except ValueError:
        return 2.0
    # "inf" and "nan" parse as floats, but no caller can wait (or build a timedelta) from them.
    return max(0.0, seconds) if math.isfinite(seconds) else 2.0


_NOT_JSON = object()


def _load(content: bytes) -> Any:
    """An answer's JSON value, or ``_NOT_JSON``.

    Numbers as exact Decimals (an integer of any length included); NaN and Infinity, which
    JSON lacks, as a marker no field accepts, so an order answer holding one still yields its
    order id.
    """
    try:
        return json.loads(
            content, parse_float=Decimal, parse_int=Decimal, parse_constant=_NonFinite
        )
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return _NOT_JSON


class _NonFinite:
    """What ``NaN`` or ``Infinity`` in an answer reads as: not a value any field accepts."""

    def __init__(self, constant: str) -> None:
        self.constant = constant

    def __repr__(self) -> str:
        return self.constant


_REPR = reprlib.Repr()  # depth and length bounded, so no nesting makes a RecursionError
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = SHOWN


def _shown(value: object) -> str:
    """A provider value, cut short for an error message or a log line."""
    text = value if isinstance(value, str) else _REPR.repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + f"... ({len(text)} characters)"


def _message(body: dict[str, Any]) -> str:
    return _shown(body.get("message", ""))


# -- answers: each endpoint's documented success, or its documented error, or malformed ------


def _raise_documented(status: int, body: dict[str, Any]) -> None:
    """A 2xx body carrying a documented error code is that error, as the 4xx would be."""
    code = body.get("code")
    if isinstance(code, str) and code in REJECTIONS:
        raise REJECTIONS[code](_message(body), status=status, code=code)


def _success_status(path: str, status: int, body: dict[str, Any]) -> None:
    """/services and /prices say ``"status": "success"``; an answer saying otherwise is not."""
    _raise_documented(status, body)
    state = body.get("status", "success")
    if state != "success":
        raise MalformedResponse(f"{path}: HTTP {status} answer has status {_shown(state)}")


def _parse_balance(status: int, body: dict[str, Any]) -> Decimal:
    _raise_documented(status, body)
    return _money(body, "balance", MAX_BALANCE)


def _parse_services(status: int, body: dict[str, Any]) -> list[Service]:
    _success_status("/services", status, body)
    rows = _field(body, "services", list)
    services: list[Service] = []
    for row in rows:
        if not isinstance(row, dict):
            raise MalformedResponse(f"/services: bad service entry {_shown(row)}")
        services.append(
            Service(id=_whole(row, "id", MAX_ID, integral=True), name=_name(row, "name"))
        )
    return services


def _parse_prices(status: int, body: dict[str, Any]) -> dict[int, Price]:
    _success_status("/prices", status, body)
    table = _field(body, "prices", dict)
    prices: dict[int, Price] = {}
    for key, row in table.items():
        if not isinstance(row, dict):
            raise MalformedResponse(f"/prices: bad price entry {_shown(row)}")
        country_id = _whole({"id": row.get("id", key)}, "id", MAX_ID, integral=True)
        prices[country_id] = Price(
            country_id=country_id,
            country=_name(row, "country"),
            cost=_money(row, "cost", MAX_COST),
            # A count or a success rate written with a fraction is cut to whole units.
            count=_whole(row, "count", MAX_COUNT),
            rate=_whole(row, "rate", 100),
        )
    return prices


def _parse_status(status: int, body: dict[str, Any]) -> CodeStatus:
    state = body.get("status")
    if state == "STATUS_OK":
        code = _text(body.get("code"), printable=False)  # an SMS text may span lines
        if code is None:
            raise MalformedResponse("/status: STATUS_OK without a valid 'code'")
        return CodeStatus(code=code)
    if state == "STATUS_WAIT_CODE":
        return CodeStatus(code=None)
    _raise_documented(status, body)
    if not isinstance(state, str):
        raise MalformedResponse("/status: answer lacks a valid 'status' field")
    raise MalformedResponse(f"/status: unknown status {_shown(state)}")


def _parse_cancel(status: int, body: dict[str, Any]) -> None:
    _raise_documented(status, body)
    if body.get("status") != "success" or body.get("code") is not None:
        shown = _shown({k: body[k] for k in ("status", "code", "message") if k in body})
        raise MalformedResponse(f"/set_status: HTTP {status} answer is not a success: {shown}")


def _parse_order(status: int, body: dict[str, Any]) -> Order:
    raw_id = body.get("order_id")
    order_id = usable_order_id(raw_id)
    if order_id is None:
        _raise_documented(status, body)
        what = (
            "lacks an order_id" if raw_id is None else f"has an unusable order_id {_shown(raw_id)}"
        )
        raise MalformedResponse(f"/order: HTTP {status} answer {what}")
    # From here on a number was bought: whatever else is wrong, the id must reach the caller.
    phone = _text(body.get("phone"), limit=MAX_PHONE_LENGTH)
    problems: list[str] = []
    if not 200 <= status < 300:
        problems.append(f"it came with HTTP {status}")
    cost: Decimal | None = None
    try:
        cost = _money(body, "cost", MAX_COST)
    except MalformedResponse as exc:
        problems.append(str(exc))
    if phone is None:
        problems.append(f"answer has an unusable 'phone': {_shown(body.get('phone'))}")
    if body.get("status", "success") != "success" or body.get("code") is not None:
        state = {k: body[k] for k in ("status", "code", "message") if k in body}
        problems.append(f"answer also says {_shown(state)}")
    if cost is None:
        message = f"/order: order {order_id} bought at an unknown cost: " + "; ".join(problems)
        raise UnpricedOrder(message, order_id=order_id, phone=phone)
    if problems:
        message = f"/order: order {order_id} is not usable: " + "; ".join(problems)
        raise UnusableOrder(message, order_id=order_id, phone=phone, cost=cost)
    assert phone is not None
    return Order(order_id=order_id, phone=phone, cost=cost)


def usable_order_id(value: object) -> str | None:
    """``value`` as an order id we can store, poll and cancel by, or None: 1 to
    MAX_ORDER_ID_LENGTH printable characters without whitespace (a whole number is taken)."""
    return _text(value, limit=MAX_ORDER_ID_LENGTH, spaces=False)


def _text(
    value: object, *, limit: int | None = None, spaces: bool = True, printable: bool = True
) -> str | None:
    """A string or whole number from an answer as text; None when empty, too long (over
    ``limit``), holding control characters (unless not ``printable``), or (unless ``spaces``)
    holding whitespace."""
    if isinstance(value, Decimal):
        if not value.is_finite() or value.as_tuple().exponent != 0:
            return None  # only an integer written as one (parse_int) is an id or a code
        value = str(value)
    if not isinstance(value, str) or not _encodable(value):
        return None
    text = value.strip()
    if not text or (limit is not None and len(text) > limit):
        return None
    if printable and not text.isprintable():
        return None
    if not spaces and any(char.isspace() for char in text):
        return None
    return text


def _field(body: dict[str, Any], name: str, kind: Any) -> Any:
    value = body.get(name)
    if value is None or not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedResponse(f"answer lacks a valid {name!r} field")
    return value


def _encodable(text: str) -> bool:
    """Whether ``text`` is real Unicode: JSON may carry a lone surrogate (\\ud800), which
    could be neither stored nor sent back."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _name(row: dict[str, Any], name: str) -> str:
    """A service's or a country's name: any text (it is neutralised where it is shown)."""
    value = row.get(name)
    if not isinstance(value, str) or not _encodable(value):
        raise MalformedResponse(f"answer lacks a valid {name!r}: {_shown(value)}")
    return value


def _number(body: dict[str, Any], name: str, what: str) -> Decimal:
    """A JSON number, or a string holding one, as a finite Decimal."""
    value = body.get(name)
    if not isinstance(value, Decimal | str | int) or isinstance(value, bool):
        raise MalformedResponse(f"answer lacks a valid {name!r} {what}")
    try:
        number = Decimal(value) if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise MalformedResponse(f"answer has a non-numeric {name!r}: {_shown(value)}") from None
    if not number.is_finite():
        raise MalformedResponse(f"answer has an invalid {name!r}: {_shown(value)}")
    return number


def _money(body: dict[str, Any], name: str, limit: Decimal) -> Decimal:
    """An amount of dollars: from 0 to ``limit``, so that any sum or micro-dollar conversion
    of it stays exact and fits a BIGINT (1e999999 is finite, and overflows the first sum)."""
    amount = _number(body, name, "amount")
    if amount < 0:
        raise MalformedResponse(f"answer has an invalid {name!r}: {_shown(body[name])}")
    if amount > limit:
        raise MalformedResponse(f"answer has an implausible {name!r}: {_shown(body[name])}")
    return amount


def _whole(body: dict[str, Any], name: str, limit: int, *, integral: bool = False) -> int:
    """A whole number from 0 to ``limit``; checked before ``int()``, which would spend minutes
    on 1e999999999. With ``integral`` (an id), a fraction is refused rather than cut."""
    number = _number(body, name, "number")
    if not 0 <= number <= limit or (integral and number != number.to_integral_value()):
        raise MalformedResponse(f"answer has an invalid {name!r}: {_shown(body[name])}")
    return int(number)
