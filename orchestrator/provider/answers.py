"""What each endpoint's answer must hold: the JSON read exactly, then each field checked against
the documented success or error, so that nothing unusable reaches the caller as a value."""

from __future__ import annotations

import json
import reprlib
from decimal import Decimal, InvalidOperation
from typing import Any

from orchestrator.errors import (
    REJECTIONS,
    MalformedResponse,
    UnpricedOrder,
    UnusableOrder,
)
from orchestrator.provider.types import CodeStatus, Order, Price, Service

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

NOT_JSON = object()  # what load_json returns for an answer that is not JSON


def load_json(content: bytes) -> Any:
    """An answer's JSON value, or ``NOT_JSON``.

    Numbers as exact Decimals (an integer of any length included); NaN and Infinity, which
    JSON lacks, as a marker no field accepts, so an order answer holding one still yields its
    order id.
    """
    try:
        return json.loads(
            content, parse_float=Decimal, parse_int=Decimal, parse_constant=_NonFinite
        )
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return NOT_JSON


class _NonFinite:
    """What ``NaN`` or ``Infinity`` in an answer reads as: not a value any field accepts."""

    def __init__(self, constant: str) -> None:
        self.constant = constant

    def __repr__(self) -> str:
        return self.constant


_REPR = reprlib.Repr()  # depth and length bounded, so no nesting makes a RecursionError
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = SHOWN


def shown(value: object) -> str:
    """A provider value, cut short for an error message or a log line."""
    text = value if isinstance(value, str) else _REPR.repr(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + f"... ({len(text)} characters)"


def message_of(body: dict[str, Any]) -> str:
    return shown(body.get("message", ""))


# -- answers: each endpoint's documented success, or its documented error, or malformed ------


def _raise_documented(status: int, body: dict[str, Any]) -> None:
    """A 2xx body carrying a documented error code is that error, as the 4xx would be."""
    code = body.get("code")
    if isinstance(code, str) and code in REJECTIONS:
        raise REJECTIONS[code](message_of(body), status=status, code=code)


def _success_status(path: str, status: int, body: dict[str, Any]) -> None:
    """/services and /prices say ``"status": "success"``; an answer saying otherwise is not."""
    _raise_documented(status, body)
    state = body.get("status", "success")
    if state != "success":
        raise MalformedResponse(f"{path}: HTTP {status} answer has status {shown(state)}")


def parse_balance(status: int, body: dict[str, Any]) -> Decimal:
    _raise_documented(status, body)
    return _money(body, "balance", MAX_BALANCE)


def parse_services(status: int, body: dict[str, Any]) -> list[Service]:
    _success_status("/services", status, body)
    rows = _field(body, "services", list)
    services: list[Service] = []
    for row in rows:
        if not isinstance(row, dict):
            raise MalformedResponse(f"/services: bad service entry {shown(row)}")
        services.append(
            Service(id=_whole(row, "id", MAX_ID, integral=True), name=_name(row, "name"))
        )
    return services


def parse_prices(status: int, body: dict[str, Any]) -> dict[int, Price]:
    _success_status("/prices", status, body)
    table = _field(body, "prices", dict)
    prices: dict[int, Price] = {}
    for key, row in table.items():
        if not isinstance(row, dict):
            raise MalformedResponse(f"/prices: bad price entry {shown(row)}")
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


def parse_status(status: int, body: dict[str, Any]) -> CodeStatus:
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
    raise MalformedResponse(f"/status: unknown status {shown(state)}")


def parse_cancel(status: int, body: dict[str, Any]) -> None:
    _raise_documented(status, body)
    if body.get("status") != "success" or body.get("code") is not None:
        said = shown({k: body[k] for k in ("status", "code", "message") if k in body})
        raise MalformedResponse(f"/set_status: HTTP {status} answer is not a success: {said}")


def parse_order(status: int, body: dict[str, Any]) -> Order:
    raw_id = body.get("order_id")
    order_id = usable_order_id(raw_id)
    if order_id is None:
        _raise_documented(status, body)
        what = (
            "lacks an order_id" if raw_id is None else f"has an unusable order_id {shown(raw_id)}"
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
        problems.append(f"answer has an unusable 'phone': {shown(body.get('phone'))}")
    if body.get("status", "success") != "success" or body.get("code") is not None:
        state = {k: body[k] for k in ("status", "code", "message") if k in body}
        problems.append(f"answer also says {shown(state)}")
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
        raise MalformedResponse(f"answer lacks a valid {name!r}: {shown(value)}")
    return value


def _number(body: dict[str, Any], name: str, what: str) -> Decimal:
    """A JSON number, or a string holding one, as a finite Decimal."""
    value = body.get(name)
    if not isinstance(value, Decimal | str | int) or isinstance(value, bool):
        raise MalformedResponse(f"answer lacks a valid {name!r} {what}")
    try:
        number = Decimal(value) if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise MalformedResponse(f"answer has a non-numeric {name!r}: {shown(value)}") from None
    if not number.is_finite():
        raise MalformedResponse(f"answer has an invalid {name!r}: {shown(value)}")
    return number


def _money(body: dict[str, Any], name: str, limit: Decimal) -> Decimal:
    """An amount of dollars: from 0 to ``limit``, so that any sum or micro-dollar conversion
    of it stays exact and fits a BIGINT (1e999999 is finite, and overflows the first sum)."""
    amount = _number(body, name, "amount")
    if amount < 0:
        raise MalformedResponse(f"answer has an invalid {name!r}: {shown(body[name])}")
    if amount > limit:
        raise MalformedResponse(f"answer has an implausible {name!r}: {shown(body[name])}")
    return amount


def _whole(body: dict[str, Any], name: str, limit: int, *, integral: bool = False) -> int:
    """A whole number from 0 to ``limit``; checked before ``int()``, which would spend minutes
    on 1e999999999. With ``integral`` (an id), a fraction is refused rather than cut."""
    number = _number(body, name, "number")
    if not 0 <= number <= limit or (integral and number != number.to_integral_value()):
        raise MalformedResponse(f"answer has an invalid {name!r}: {shown(body[name])}")
    return int(number)
