"""Issue 11: the client against garbage. Any answer, on any endpoint, yields a well-typed,
sane value or an exception of the documented tree (``ProviderError``); an order answer naming
a usable order id never loses it."""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace
from typing import Any
from unittest import mock

import httpx
import pytest
import tenacity.nap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import (
    MalformedResponse,
    ProviderError,
    ProviderRejected,
    RateLimited,
    UnusableOrder,
)
from orchestrator.money import to_micros
from orchestrator.provider.answers import MAX_COST, usable_order_id
from orchestrator.provider.client import LegitSMSClient
from orchestrator.provider.retries import RETRY_AFTER_CAP
from orchestrator.provider.transport import MAX_RESPONSE_BYTES
from orchestrator.provider.types import CodeStatus, Order, Price, Service
from tests.test_client import (
    BALANCE,
    BASE_URL,
    CANCELLED,
    CODE,
    ORDER,
    PRICES,
    SECRET,
    SERVICES,
    USA,
    WHATSAPP,
    FakeProvider,
    FakeThrottle,
    Step,
)

EXAMPLES = int(os.environ.get("CLIENT_GARBAGE_EXAMPLES", "300"))
LARGEST_ID = 2**31 - 1  # ids are stored in INTEGER columns

CALLS: dict[str, Callable[[LegitSMSClient], object]] = {
    "balance": lambda c: c.balance(),
    "services": lambda c: c.services(),
    "prices": lambda c: c.prices(WHATSAPP),
    "order": lambda c: c.order(WHATSAPP, USA),
    "status": lambda c: c.status("12345678"),
    "cancel": lambda c: c.cancel("12345678"),
}
DOCUMENTED: dict[str, Any] = {
    "balance": BALANCE,
    "services": SERVICES,
    "prices": PRICES,
    "order": ORDER,
    "status": CODE,
    "cancel": CANCELLED,
}
ERROR_CODES = [
    "invalid_key",
    "missing_params",
    "no_stock",
    "insufficient_funds",
    "not_found",
    "cannot_cancel",
    "cancel_failed",
    "rest_no_route",
]


# -- JSON text, written by hand so that it may hold what json.dumps cannot ----------------


class Raw(str):
    """A JSON token written as it is: NaN, 1e999999999, a 900-deep list..."""


RAW_TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999999999",
    "-1e999999999",
    "1E-999999999",
    "1e15",
    "-0",
    "-0.0",
    "0.0000001",
    "1.5",
    "123456789012345678901234567890123456789012345678901234567890123456789",
    "9" * 5000,
    "1" + "0" * 4400,
]
ODD_STRINGS = [
    "",
    " ",
    "NaN",
    "Infinity",
    "-1",
    "1e999999999",
    "1_000",
    "0x10",
    "\u0661\u0662",  # Arabic-Indic digits
    " 12 ",
    "12\n",
    "\x1b[31m1",
    "\ud800",  # a lone surrogate, which JSON can carry as \ud800
    "a\x00b",
    "7" * 100,
    "success",
    "STATUS_OK",
    "STATUS_WAIT_CODE",
]


def deep(depth: int) -> Raw:
    return Raw("[" * depth + "1" + "]" * depth)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(ODD_STRINGS),
    st.sampled_from(RAW_TOKENS).map(Raw),
    st.integers(min_value=1, max_value=1200).map(deep),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=12,
)


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


# -- near-valid bodies: the documented answer with one thing changed -----------------------

Path = tuple[str | int, ...]


def _paths(value: Any, prefix: Path = ()) -> list[Path]:
    found: list[Path] = []
    if isinstance(value, dict):
        for key, inner in value.items():
            found.append((*prefix, key))
            found.extend(_paths(inner, (*prefix, key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found.append((*prefix, index))
            found.extend(_paths(inner, (*prefix, index)))
    return found


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


@st.composite
def mutated(draw: st.DrawFn, name: str) -> Any:
    body = _copy(DOCUMENTED[name])
    paths = _paths(body)
    how = draw(st.sampled_from(["replace", "delete", "add-code", "add-field", "replace-twice"]))
    if how in ("replace", "replace-twice"):
        for _ in range(1 if how == "replace" else 2):
            *parent_path, last = draw(st.sampled_from(paths))
            parent = body
            for step in parent_path:
                parent = parent[step]
            parent[last] = draw(values)
            paths = _paths(body)
            if not paths:
                break
    elif how == "delete":
        *parent_path, last = draw(st.sampled_from(paths))
        parent = body
        for step in parent_path:
            parent = parent[step]
        del parent[last]
    elif how == "add-code":
        body["code"] = draw(st.sampled_from(ERROR_CODES) | values)
        if draw(st.booleans()):
            body["message"] = draw(values)
    else:
        body[draw(st.sampled_from(["status", "message", "order_id", "data", "code"]))] = draw(
            values
        )
    return body


def error_body(code: Any, message: Any) -> dict[str, Any]:
    return {"code": code, "message": message, "data": {"status": 400}}


def bodies(name: str) -> st.SearchStrategy[bytes]:
    text = st.one_of(
        mutated(name).map(dump),
        mutated(name).map(dump),
        st.just(dump(DOCUMENTED[name])),
        values.map(dump),
        st.builds(error_body, st.sampled_from(ERROR_CODES) | values, values).map(dump),
        st.sampled_from(["", "OK", "<html>502</html>", "null", "[]", '"x"', "{", "[" * 3000]),
    )
    encoded = text.flatmap(
        lambda t: st.sampled_from(
            [t.encode(), t.encode("utf-16"), t.encode("utf-8", "surrogatepass")]
        )
    )
    return st.one_of(encoded, encoded, encoded, st.binary(max_size=64))


CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/html", "x/\x7f"]
RETRY_AFTERS = [
    "0",
    "-1",
    "2.5",
    "1e308",
    "1e400",
    "inf",
    "-inf",
    "nan",
    "  5 ",
    "Wed, 21 Oct 2015 07:28:00 GMT",
    "99999999999999999999",
    "",
    "1_0",
]
ENCODINGS = ["identity", "gzip", "deflate", "br", "x-nonsense"]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    # Streamed: the client reads it from the stream (as from a real connection), bounded and
    # inflating gzip/deflate itself. Else httpx has read and decoded it already.
    streamed: bool = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.streamed:
            pieces = [self.body[i : i + 7] for i in range(0, len(self.body), 7)]
            return httpx.Response(self.status, content=iter(pieces), headers=self.headers)
        return httpx.Response(self.status, content=self.body, headers=self.headers)

    def decoded(self, bound: int) -> bytes | None:
        """The body as the client can read it; None when its encoding is broken or it is
        longer than ``bound``."""
        encoding = self.headers.get("content-encoding", "identity").strip().lower()
        try:
            if self.streamed and encoding in ("gzip", "deflate"):
                data = zlib.decompressobj(zlib.MAX_WBITS | 32).decompress(self.body)
            elif self.streamed and encoding not in ("", "identity"):
                return None  # an encoding the client cannot bound
            elif encoding == "gzip":  # as httpx decodes it
                inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
                data = inflater.decompress(self.body) + inflater.flush()
            elif encoding == "deflate":
                try:
                    inflater = zlib.decompressobj()
                    data = inflater.decompress(self.body) + inflater.flush()
                except zlib.error:
                    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                    data = inflater.decompress(self.body) + inflater.flush()
            else:
                data = self.body
        except zlib.error:
            return None
        return data if len(data) <= bound else None


@dataclass(frozen=True)
class NoAnswer:
    kind: type[httpx.TransportError]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        raise self.kind("scripted failure", request=request)


STATUSES = [200, 200, 200, 201, 204, 299, 301, 302, 304, 400, 401, 402, 404, 409, 429, 500, 502]


@st.composite
def answers(draw: st.DrawFn, name: str) -> Answer:
    status = draw(st.sampled_from(STATUSES) | st.integers(min_value=100, max_value=599))
    headers: dict[str, str] = {}
    if draw(st.booleans()):
        headers["content-type"] = draw(st.sampled_from(CONTENT_TYPES))
    if status == 429 or draw(st.integers(0, 4)) == 0:
        headers["retry-after"] = draw(st.sampled_from(RETRY_AFTERS))
    body = draw(bodies(name))
    if draw(st.integers(0, 5)) == 0:
        encoding = draw(st.sampled_from(ENCODINGS))
        headers["content-encoding"] = encoding
        if encoding == "gzip" and draw(st.booleans()):
            body = _gzip(body)
        elif encoding == "deflate" and draw(st.booleans()):
            body = zlib.compress(body)
    return Answer(status, headers, body, streamed=draw(st.booleans()))


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS | 16)
    return packer.compress(data) + packer.flush()


def steps(name: str) -> st.SearchStrategy[list[Step]]:
    no_answer = st.sampled_from(
        [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError]
    ).map(NoAnswer)
    step = st.one_of(answers(name), answers(name), answers(name), no_answer)
    return st.lists(step, min_size=1, max_size=3)


# -- what the client may give back --------------------------------------------------------


def _text_ok(value: object, *, empty: bool = False) -> None:
    assert type(value) is str
    assert empty or value
    value.encode("utf-8")  # no lone surrogate: it could be neither stored nor sent


def _money_ok(value: object) -> None:
    assert type(value) is Decimal
    assert value.is_finite() and value >= 0
    to_micros(value)  # usable in arithmetic and storable as micro-dollars


def _id_ok(value: object) -> None:
    assert type(value) is int
    assert 0 <= value <= LARGEST_ID


def check_value(name: str, value: object) -> None:
    if name == "balance":
        _money_ok(value)
    elif name == "services":
        assert type(value) is list
        for service in value:
            assert type(service) is Service
            _id_ok(service.id)
            _text_ok(service.name, empty=True)
    elif name == "prices":
        assert type(value) is dict
        for country_id, price in value.items():
            assert type(price) is Price
            _id_ok(price.country_id)
            assert country_id == price.country_id
            _text_ok(price.country, empty=True)
            _money_ok(price.cost)
            assert price.cost <= MAX_COST
            assert type(price.count) is int and 0 <= price.count < 2**63
            assert type(price.rate) is int and 0 <= price.rate <= 100
    elif name == "order":
        assert type(value) is Order
        assert usable_order_id(value.order_id) == value.order_id
        _text_ok(value.phone)
        _money_ok(value.cost)
        assert value.cost <= MAX_COST
    elif name == "status":
        assert type(value) is CodeStatus
        if value.code is not None:
            _text_ok(value.code)
    else:
        assert value is None


def check_error(exc: ProviderError) -> None:
    shown = str(exc) + repr(exc)
    assert len(shown) < 2000
    assert SECRET not in shown
    if isinstance(exc, RateLimited):  # whatever its Retry-After said
        assert math.isfinite(exc.retry_after)
        assert 0 <= exc.retry_after <= RETRY_AFTER_CAP
    if isinstance(exc, UnusableOrder):
        assert usable_order_id(exc.order_id) == exc.order_id
        if exc.phone is not None:
            _text_ok(exc.phone)
        if exc.cost is not None:
            _money_ok(exc.cost)


def named_order_id(step: Step, bound: int) -> str | None:
    """The usable order id an answer names, read as the client reads JSON; else None."""
    if not isinstance(step, Answer):
        return None
    content = step.decoded(bound)
    if content is None:
        return None
    try:
        body = json.loads(
            content, parse_float=Decimal, parse_int=Decimal, parse_constant=lambda _: None
        )
    except (ValueError, RecursionError):
        return None
    return usable_order_id(body.get("order_id")) if isinstance(body, dict) else None


def run(
    name: str, script: list[Step], bound: int = MAX_RESPONSE_BYTES
) -> tuple[FakeProvider, object | ProviderError]:
    provider = FakeProvider(*script)
    client = LegitSMSClient(
        BASE_URL,
        SECRET,
        attempts=3,
        max_retry_seconds=5.0,
        patience=5.0,
        max_response_bytes=bound,
        throttle=FakeThrottle(),
        transport=httpx.MockTransport(provider),
    )
    # Tenacity's back-off is skipped, not slept (see tests/test_client.py's ``sleeps``).
    with mock.patch.object(tenacity.nap, "time", SimpleNamespace(sleep=lambda seconds: None)):
        try:
            return provider, CALLS[name](client)
        except ProviderError as exc:  # anything else fails the test
            return provider, exc


def check(name: str, script: list[Step], bound: int = MAX_RESPONSE_BYTES) -> None:
    provider, outcome = run(name, script, bound)
    if isinstance(outcome, ProviderError):
        check_error(outcome)
    else:
        check_value(name, outcome)
    if name != "order":
        return
    answered = script[: len(provider.requests)]
    named = [i for i in (named_order_id(step, bound) for step in answered) if i is not None]
    if not named:
        return
    # An answer that names an order is the last one sent: nothing that may buy is replayed
    # after it; and its id reaches the caller, on the Order or on the exception.
    assert len(named) == 1 and named_order_id(answered[-1], bound) is not None, named
    [order_id] = named
    if isinstance(outcome, Order):
        assert outcome.order_id == order_id
    else:
        assert isinstance(outcome, UnusableOrder), repr(outcome)
        assert not isinstance(outcome, ProviderRejected)
        assert outcome.order_id == order_id


def _property(name: str) -> Callable[[], None]:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(script=steps(name), bound=st.sampled_from([40, 100, 400, MAX_RESPONSE_BYTES]))
    def test(script: list[Step], bound: int) -> None:
        check(name, script, bound)

    return test


test_any_balance_answer_is_a_sane_balance_or_a_documented_error = _property("balance")
test_any_services_answer_is_a_sane_list_or_a_documented_error = _property("services")
test_any_prices_answer_is_a_sane_table_or_a_documented_error = _property("prices")
test_any_status_answer_is_a_sane_status_or_a_documented_error = _property("status")
test_any_cancel_answer_is_a_success_or_a_documented_error = _property("cancel")
test_any_order_answer_keeps_a_named_order_id = _property("order")


# -- what the property found, as examples -------------------------------------------------


def scripted(name: str, *script: Step) -> object | ProviderError:
    return run(name, list(script))[1]


def test_a_body_whose_content_encoding_is_broken_is_malformed() -> None:
    # Found by the property: httpx.DecodingError escaped the documented tree.
    broken = Answer(200, {"content-encoding": "gzip"}, b'{"balance": "50.00"}')

    assert type(scripted("balance", broken)) is MalformedResponse
    assert type(scripted("order", broken)) is MalformedResponse  # in doubt: it may have bought


def json_answer(status: int, text: str) -> Answer:
    return Answer(status, {"content-type": "application/json"}, text.encode())


def price_row(**fields: str) -> str:
    row = {"country": '"United States"', "id": "1", "cost": "2.66", "count": "3868", "rate": "56"}
    row.update(fields)
    inner = ",".join(f'"{k}":{v}' for k, v in row.items())
    return '{"status":"success","prices":{"1":{' + inner + "}}}"


BAD_PRICE_ROWS = {
    # found by the property: a negative count or id came back as a Price
    "count--1": price_row(count="-1"),
    "id--1": price_row(id="-1"),
    "rate-101": price_row(rate="101"),
    "rate--5": price_row(rate="-5"),
    "id-true": price_row(id="true"),  # int(True) is 1: the USA
    "id-1.5": price_row(id="1.5"),  # int() cut it to 1
    "id-2^40": price_row(id=str(2**40)),
    "cost-1e7": price_row(cost="1e7"),  # above MAX_COST: an order at it would be unpriced
    "cost-1e999999": price_row(cost="1e999999"),  # finite, and overflows the first sum
    "country-list": price_row(country="[1]"),  # str() made a name of it
    "country-surrogate": price_row(country='"\\ud800"'),
}


@pytest.mark.parametrize("body", BAD_PRICE_ROWS.values(), ids=BAD_PRICE_ROWS)
def test_a_price_row_with_a_field_out_of_its_range_or_type_is_malformed(body: str) -> None:
    assert type(scripted("prices", json_answer(200, body))) is MalformedResponse


HUGE_EXPONENT = "1e999999999"  # int() of it computes a billion-digit number: minutes, GBs


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("services", '{"services": [{"id": 1e999999999, "name": "Whatsapp"}]}'),
        ("prices", price_row(id=HUGE_EXPONENT)),
        ("prices", price_row(count=HUGE_EXPONENT)),
        (
            "prices",
            '{"prices": {"1e999999999": {"country": "US", "cost": 1, "count": 1, "rate": 5}}}',
        ),
    ],
    ids=["service-id", "country-id", "count", "country-key"],
)
def test_a_number_with_a_huge_exponent_is_refused_at_once(name: str, body: str) -> None:
    assert type(scripted(name, json_answer(200, body))) is MalformedResponse


@pytest.mark.parametrize(
    "body",
    [
        '{"services": [{"id": 1012, "name": ["Whatsapp"]}]}',
        '{"services": [{"id": 1012, "name": "\\ud800"}]}',
        '{"services": [{"id": true, "name": "Whatsapp"}]}',
    ],
    ids=["name-list", "name-surrogate", "id-true"],
)
def test_a_service_entry_of_the_wrong_type_is_malformed(body: str) -> None:
    assert type(scripted("services", json_answer(200, body))) is MalformedResponse


@pytest.mark.parametrize("balance", ["1e999999", '"1e999999"', "1e13"])
def test_a_balance_too_large_to_add_up_is_malformed(balance: str) -> None:
    body = json_answer(200, f'{{"balance": {balance}, "currency": "USD"}}')
    assert type(scripted("balance", body)) is MalformedResponse


def test_an_sms_code_holding_a_lone_surrogate_is_malformed() -> None:
    # It could not be stored (UTF-8) nor shown; the read is retried, then given up.
    body = json_answer(200, '{"status": "STATUS_OK", "code": "12\\ud83456"}')
    assert type(scripted("status", body)) is MalformedResponse


NESTED = "[" * 900 + "1" + "]" * 900  # parses, and repr() of it runs out of stack


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("balance", json_answer(404, f'{{"code": "rest_no_route", "message": {NESTED}}}')),
        ("cancel", json_answer(200, f'{{"status": {NESTED}}}')),
        ("order", json_answer(200, f'{{"order_id": "777", "phone": {NESTED}, "cost": 1}}')),
        ("services", json_answer(200, f'{{"services": [{{"id": 1, "name": {NESTED}}}]}}')),
    ],
    ids=["error-message", "cancel-status", "order-phone", "service-name"],
)
def test_a_deeply_nested_value_is_shown_short_not_a_recursion_error(
    name: str, answer: Answer
) -> None:
    outcome = scripted(name, answer)
    assert isinstance(outcome, ProviderError)
    assert len(str(outcome)) < 1000


NAMED_ORDER = '{"order_id": "777", "phone": "12025550199", "cost": 2.66'


@pytest.mark.parametrize(
    "answer",
    [
        # found by the property: a 400 naming an order, without a code, was "malformed"
        json_answer(400, NAMED_ORDER + ', "status": null}'),
        json_answer(404, NAMED_ORDER + ', "code": "no_stock"}'),
        json_answer(402, NAMED_ORDER + ', "code": "insufficient_funds"}'),
        json_answer(500, NAMED_ORDER + "}"),
        Answer(429, {"retry-after": "1"}, (NAMED_ORDER + "}").encode()),
        json_answer(302, NAMED_ORDER + "}"),
    ],
    ids=["400", "404-no-stock", "402-insufficient-funds", "500", "429", "302"],
)
def test_an_order_answer_naming_an_order_id_keeps_it_whatever_its_http_status(
    answer: Answer,
) -> None:
    provider, outcome = run("order", [answer, json_answer(200, json.dumps(ORDER))])

    assert isinstance(outcome, UnusableOrder), repr(outcome)
    assert (outcome.order_id, outcome.cost) == ("777", Decimal("2.66"))
    assert len(provider.requests) == 1  # never resent: it may have bought a number
