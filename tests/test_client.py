"""The LegitSMS client keeps its contract: typed answers, typed errors, no replay that buys."""

from __future__ import annotations

import json
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import tenacity.nap
from structlog.testing import capture_logs

from orchestrator.errors import (
    CancelFailed,
    CannotCancel,
    InsufficientFunds,
    InvalidKey,
    MalformedResponse,
    MissingParams,
    NoStock,
    NotFound,
    NotSent,
    OutcomeUnknown,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    Throttled,
)
from orchestrator.provider.client import LegitSMSClient
from orchestrator.provider.ratelimit import Priority
from orchestrator.provider.transport import proxy_for
from orchestrator.provider.types import CodeStatus, Order, Price, Service
from orchestrator.sandbox.config import DEMO_API_KEY, SandboxConfig
from orchestrator.sandbox.server import SandboxServer

WHATSAPP, FACEBOOK, USA, UK = 1012, 1010, 1, 16
SECRET = "sk_live_5ecret0123456789abcdef"
BASE_URL = "https://legitsms.test/wp-json/legitsms/v2"

Call = Callable[[LegitSMSClient], object]


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Tenacity's back-off, recorded instead of slept, so retries cost no wall time."""
    slept: list[float] = []
    monkeypatch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=slept.append))
    return slept


def _no_key_in(exc: BaseException, key: str) -> None:
    """The key is in neither the message, the repr, nor the traceback a log would print."""
    shown = "".join(traceback.format_exception(exc))
    assert key not in str(exc)
    assert key not in repr(exc)
    assert key not in shown


# -- against the simulator, over real HTTP ----------------------------------------------------


class Recorder(httpx.BaseTransport):
    """A real HTTP transport that keeps every request it sends, to see where the key went."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.sent.append(request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class FakeClock:
    """The simulator's clock, moved by hand so a code can arrive without waiting."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Live:
    """A running simulator and a client talking to it through a recording transport."""

    server: SandboxServer
    client: LegitSMSClient
    recorder: Recorder

    def requests(self, endpoint: str) -> int:
        """How many requests the simulator saw for ``endpoint`` ("POST /order", ...)."""
        return int(self.server.ledger.snapshot(time.time())["requests"].get(endpoint, 0))


StartLive = Callable[..., Live]


@pytest.fixture
def live() -> Iterator[StartLive]:
    started: list[Live] = []

    def start(
        *,
        key: str = DEMO_API_KEY,
        clock: Callable[[], float] = time.time,
        read_timeout: float = 5.0,
        attempts: int = 3,
        **settings: Any,
    ) -> Live:
        server = SandboxServer(SandboxConfig(**settings), port=0, clock=clock).start()
        recorder = Recorder()
        client = LegitSMSClient(
            server.url,
            key,
            connect_timeout=1.0,
            read_timeout=read_timeout,
            attempts=attempts,
            max_retry_seconds=5.0,
            transport=recorder,
        )
        started.append(Live(server, client, recorder))
        return started[-1]

    yield start
    for each in started:
        each.client.close()
        each.server.stop()


NO_CODE: dict[str, Any] = {"never_ratio": 1.0}
CODE_AT_ONCE: dict[str, Any] = {"never_ratio": 0.0, "code_delay": (0.0, 0.0)}


def _order_then_cancel(client: LegitSMSClient) -> None:
    client.cancel(client.order(WHATSAPP, USA).order_id)


def test_balance_services_and_prices_answer_typed_values_with_money_as_decimal(
    live: StartLive,
) -> None:
    client = live().client

    balance = client.balance()
    services = client.services()
    prices = client.prices(WHATSAPP)

    assert balance == Decimal("1000.00")
    assert type(balance) is Decimal
    assert Service(id=1012, name="Whatsapp") in services
    assert Service(id=924, name="Tiktok/Douyin") in services
    assert prices[USA] == Price(
        country_id=USA, country="United States", cost=Decimal("2.66"), count=3868, rate=56
    )
    assert set(prices) == {USA, UK, 22}
    assert all(type(price.cost) is Decimal for price in prices.values())


def test_an_order_answers_its_id_phone_and_exact_cost_and_charges_that_cost(
    live: StartLive,
) -> None:
    sandbox = live()

    order = sandbox.client.order(WHATSAPP, USA)

    assert isinstance(order, Order)
    assert order.cost == Decimal("2.66")
    assert type(order.cost) is Decimal
    assert order.phone.startswith("1")
    bought = sandbox.server.ledger.order(order.order_id)
    assert bought is not None and bought.phone == order.phone
    assert sandbox.client.balance() == Decimal("997.34")
    assert sandbox.client.prices(WHATSAPP)[USA].count == 3867


def test_status_says_waiting_until_the_code_arrives_and_then_gives_the_code(
    live: StartLive,
) -> None:
    clock = FakeClock()
    sandbox = live(clock=clock, never_ratio=0.0, code_delay=(5.0, 5.0))
    order = sandbox.client.order(WHATSAPP, USA)

    before = sandbox.client.status(order.order_id)
    clock.now += 6
    after = sandbox.client.status(order.order_id)

    bought = sandbox.server.ledger.order(order.order_id)
    assert bought is not None
    assert before == CodeStatus(code=None)
    assert after == CodeStatus(code=bought.code)


def test_a_cancel_succeeds_and_the_order_is_refunded(live: StartLive) -> None:
    sandbox = live(cancel_min_age=0.0, **NO_CODE)
    order = sandbox.client.order(WHATSAPP, USA)

    sandbox.client.cancel(order.order_id)

    bought = sandbox.server.ledger.order(order.order_id)
    assert bought is not None and bought.refunded
    assert sandbox.client.balance() == Decimal("1000.00")


def test_the_environment_proxy_carries_the_calls_unless_no_proxy_names_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = SandboxServer(SandboxConfig(), port=0).start()
    try:
        with socket.socket() as closed:  # a port nothing listens on: the proxy is down
            closed.bind(("127.0.0.1", 0))
            dead_proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
        monkeypatch.setenv("HTTP_PROXY", dead_proxy)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert proxy_for(server.url) == dead_proxy
        with (
            LegitSMSClient(server.url, DEMO_API_KEY, attempts=1) as client,
            pytest.raises(NotSent),  # it went to the proxy, which is not there
        ):
            client.balance()

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert proxy_for(server.url) is None
        with LegitSMSClient(server.url, DEMO_API_KEY, attempts=1) as client:
            assert client.balance() > 0
    finally:
        server.stop()


def test_the_key_travels_in_the_x_api_key_header_only_never_in_a_url_or_a_body(
    live: StartLive,
) -> None:
    sandbox = live(**NO_CODE)
    client = sandbox.client

    client.balance()
    client.services()
    client.prices(WHATSAPP)
    order = client.order(WHATSAPP, USA)
    client.status(order.order_id)
    with pytest.raises(CancelFailed):
        client.cancel(order.order_id)  # too early: the simulator answers, which is all we need

    sent = sandbox.recorder.sent
    assert {(r.method, r.url.path.rsplit("/", 1)[-1]) for r in sent} == {
        ("GET", "balance"),
        ("GET", "services"),
        ("GET", "prices"),
        ("POST", "order"),
        ("GET", "status"),
        ("POST", "set_status"),
    }
    for request in sent:
        assert request.headers["X-API-KEY"] == DEMO_API_KEY
        assert DEMO_API_KEY not in str(request.url)
        assert "api_key" not in request.url.params
        assert DEMO_API_KEY.encode() not in request.content


SIX_CALLS = [
    pytest.param(lambda c: c.balance(), "GET /balance", id="balance"),
    pytest.param(lambda c: c.services(), "GET /services", id="services"),
    pytest.param(lambda c: c.prices(WHATSAPP), "GET /prices", id="prices"),
    pytest.param(lambda c: c.order(WHATSAPP, USA), "POST /order", id="order"),
    pytest.param(lambda c: c.status("12345678"), "GET /status", id="status"),
    pytest.param(lambda c: c.cancel("12345678"), "POST /set_status", id="cancel"),
]


@pytest.mark.parametrize(("call", "endpoint"), SIX_CALLS)
def test_a_wrong_key_raises_invalid_key_with_401_on_every_endpoint_without_a_retry(
    live: StartLive, call: Call, endpoint: str
) -> None:
    wrong = "sk_live_not_this_one_0123456789"
    sandbox = live(key=wrong)

    with pytest.raises(InvalidKey) as caught:
        call(sandbox.client)

    assert caught.value.status == 401
    assert caught.value.code == "invalid_key"
    assert sandbox.requests(endpoint) == 1
    _no_key_in(caught.value, wrong)


@pytest.mark.parametrize(
    ("settings", "call", "error", "status"),
    [
        pytest.param({}, lambda c: c.prices(4242), MissingParams, 400, id="unknown-service"),
        pytest.param({}, lambda c: c.status(""), MissingParams, 400, id="empty-order-id"),
        pytest.param({}, lambda c: c.order(FACEBOOK, UK), NoStock, 404, id="sold-out"),
        pytest.param(
            {"balance": Decimal("1.00")},
            lambda c: c.order(WHATSAPP, USA),
            InsufficientFunds,
            402,
            id="low-balance",
        ),
        pytest.param({}, lambda c: c.status("12345678"), NotFound, 404, id="status-unknown"),
        pytest.param({}, lambda c: c.cancel("12345678"), NotFound, 404, id="cancel-unknown"),
        pytest.param(CODE_AT_ONCE, _order_then_cancel, CannotCancel, 400, id="code-came"),
        pytest.param(NO_CODE, _order_then_cancel, CancelFailed, 400, id="too-early"),
    ],
)
def test_every_documented_error_raises_its_own_exception_with_its_http_status(
    live: StartLive,
    settings: dict[str, Any],
    call: Call,
    error: type[ProviderRejected],
    status: int,
) -> None:
    sandbox = live(**settings)

    with pytest.raises(ProviderRejected) as caught:
        call(sandbox.client)

    assert type(caught.value) is error
    assert caught.value.status == status
    assert caught.value.code == error.code
    assert caught.value.replayed is False
    refusals = [code for _, _, code in sandbox.server.ledger.requests() if code >= 400]
    assert refusals == [status]  # refused once, never retried


def test_a_low_balance_order_buys_nothing(live: StartLive) -> None:
    sandbox = live(balance=Decimal("2.65"))

    with pytest.raises(InsufficientFunds):
        sandbox.client.order(WHATSAPP, USA)

    assert sandbox.server.ledger.orders() == []
    assert sandbox.client.balance() == Decimal("2.65")


def test_a_5xx_from_the_proxy_raises_provider_unavailable_and_reads_are_retried(
    live: StartLive,
) -> None:
    sandbox = live(fault_5xx=1.0, attempts=2)

    with pytest.raises(ProviderUnavailable) as caught:
        sandbox.client.balance()

    assert caught.value.status in {502, 503}
    assert sandbox.requests("GET /balance") == 2


def test_a_5xx_from_the_proxy_on_an_order_is_not_resent(live: StartLive) -> None:
    sandbox = live(fault_5xx=1.0, attempts=3)

    with pytest.raises(ProviderUnavailable):
        sandbox.client.order(WHATSAPP, USA)

    assert sandbox.requests("POST /order") == 1


@pytest.mark.parametrize(("call", "endpoint"), SIX_CALLS)
def test_a_maintenance_page_instead_of_json_raises_malformed_response_after_safe_retries(
    live: StartLive, call: Call, endpoint: str
) -> None:
    sandbox = live(fault_non_json=1.0, attempts=3)

    with pytest.raises(MalformedResponse):
        call(sandbox.client)

    # A purchase or a cancel may have happened behind the page: never resent (settle reads
    # /status to learn what became of a cancel). Reads are.
    sent_once = endpoint in ("POST /order", "POST /set_status")
    assert sandbox.requests(endpoint) == (1 if sent_once else 3)


def test_a_slow_answer_raises_outcome_unknown(live: StartLive) -> None:
    sandbox = live(fault_slow=1.0, slow_seconds=1.0, read_timeout=0.1, attempts=1)

    with pytest.raises(OutcomeUnknown):
        sandbox.client.balance()


def test_a_slow_order_answer_raises_outcome_unknown_and_the_order_is_not_resent(
    live: StartLive,
) -> None:
    sandbox = live(fault_slow=1.0, slow_seconds=1.0, read_timeout=0.1, attempts=3)

    with pytest.raises(OutcomeUnknown):
        sandbox.client.order(WHATSAPP, USA)

    assert sandbox.requests("POST /order") == 1
    assert len(sandbox.server.ledger.orders()) == 1  # bought, and the client knows it may be


def test_a_dropped_order_answer_raises_outcome_unknown_and_the_order_is_not_resent(
    live: StartLive,
) -> None:
    sandbox = live(fault_drop_order=1.0, attempts=3)

    with pytest.raises(OutcomeUnknown):
        sandbox.client.order(WHATSAPP, USA)

    assert sandbox.requests("POST /order") == 1
    assert len(sandbox.server.ledger.orders()) == 1
    assert sandbox.client.balance() == Decimal("997.34")  # the next call finds a fresh connection


def test_an_injected_429_raises_rate_limited_with_retry_after_from_the_header(
    live: StartLive, sleeps: list[float]
) -> None:
    sandbox = live(fault_429=1.0, attempts=2)

    with pytest.raises(RateLimited) as caught:
        sandbox.client.order(WHATSAPP, USA)

    assert caught.value.retry_after == 1.0
    assert sandbox.requests("POST /order") == 2  # a 429 is a refusal: the order never happened
    assert sandbox.server.ledger.orders() == []
    assert sleeps == [1.0]


def test_the_providers_rate_limit_raises_rate_limited_with_its_retry_after(
    live: StartLive,
) -> None:
    sandbox = live(rate_limit=0.5, attempts=1)
    sandbox.client.balance()

    with pytest.raises(RateLimited) as caught:
        sandbox.client.balance()

    assert caught.value.retry_after == 2.0


# -- against a scripted provider at the edge (httpx.MockTransport) ----------------------------

Step = Callable[[httpx.Request], httpx.Response]

BALANCE = {"balance": "50.00", "currency": "USD"}
SERVICES = {"status": "success", "services": [{"id": "1012", "name": "Whatsapp"}]}
PRICES = {
    "status": "success",
    "prices": {"1": {"country": "United States", "id": 1, "cost": 2.66, "count": 3868, "rate": 56}},
}
ORDER = {
    "status": "success",
    "order_id": "12345678",
    "phone": "12025550199",
    "cost": 2.66,
    "msg": "Waiting for SMS",
}
CODE = {"status": "STATUS_OK", "code": "123456"}
CANCELLED = {"status": "success", "message": "Order cancelled and refunded"}
HTML_PAGE = "<!DOCTYPE html><html><body><h1>Briefly unavailable</h1></body></html>"


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> Step:
    """Answer with ``body`` as JSON (a str is sent as it is, so it may be anything)."""
    text = body if isinstance(body, str) else json.dumps(body)
    kind = "text/html" if text.lstrip().startswith("<") else "application/json"

    def step(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, content=text.encode(), headers={"content-type": kind, **(headers or {})}
        )

    return step


def rejection(status: int, code: str) -> Step:
    return answer(
        status, {"code": code, "message": code.replace("_", " "), "data": {"status": status}}
    )


def fail(kind: type[httpx.TransportError]) -> Step:
    """No answer at all: raise what httpx raises for that failure."""

    def step(request: httpx.Request) -> httpx.Response:
        raise kind("scripted failure", request=request)

    return step


def rate_limited(retry_after: str = "0") -> Step:
    return answer(429, {"code": "rate_limited"}, {"Retry-After": retry_after})


class FakeProvider:
    """Answers each request with the next step of its script; the last step repeats."""

    def __init__(self, *steps: Step) -> None:
        self.steps = steps
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.steps[min(len(self.requests), len(self.steps)) - 1](request)


@dataclass
class FakeThrottle:
    """The shared limiter, reduced to a record of what was asked of it."""

    refuse_from: int | None = None  # refuse the Nth acquire (1-based) and every one after
    acquired: list[Priority] = field(default_factory=list)
    paused: list[float] = field(default_factory=list)

    def acquire(self, priority: Priority) -> None:
        self.acquired.append(priority)
        if self.refuse_from is not None and len(self.acquired) >= self.refuse_from:
            raise Throttled(3.0)

    def pause(self, seconds: float) -> None:
        self.paused.append(seconds)


def client_for(
    provider: FakeProvider,
    *,
    throttle: FakeThrottle | None = None,
    attempts: int = 3,
    max_retry_seconds: float = 5.0,
) -> LegitSMSClient:
    return LegitSMSClient(
        BASE_URL,
        SECRET,
        throttle=throttle,
        attempts=attempts,
        max_retry_seconds=max_retry_seconds,
        patience=max_retry_seconds,
        transport=httpx.MockTransport(provider),
    )


@dataclass(frozen=True)
class Endpoint:
    call: Call
    success: Step
    priority: Priority


ENDPOINTS = {
    "balance": Endpoint(lambda c: c.balance(), answer(200, BALANCE), Priority.POLL),
    "services": Endpoint(lambda c: c.services(), answer(200, SERVICES), Priority.POLL),
    "prices": Endpoint(lambda c: c.prices(WHATSAPP), answer(200, PRICES), Priority.ORDER),
    "status": Endpoint(lambda c: c.status("12345678"), answer(200, CODE), Priority.POLL),
    "cancel": Endpoint(lambda c: c.cancel("12345678"), answer(200, CANCELLED), Priority.CANCEL),
    "order": Endpoint(lambda c: c.order(WHATSAPP, USA), answer(200, ORDER), Priority.ORDER),
}
REPLAY_SAFE = ["balance", "services", "prices", "status", "cancel"]

UNKNOWN_OUTCOMES = {
    "read-timeout": (fail(httpx.ReadTimeout), OutcomeUnknown),
    "write-timeout": (fail(httpx.WriteTimeout), OutcomeUnknown),
    "dropped-connection": (fail(httpx.RemoteProtocolError), OutcomeUnknown),
    "connection-reset": (fail(httpx.ReadError), OutcomeUnknown),
    "500": (answer(500, "<html>500</html>"), ProviderUnavailable),
    "502": (answer(502, "<html>502</html>"), ProviderUnavailable),
    "503": (answer(503, {"code": "unavailable"}), ProviderUnavailable),
    "504": (answer(504, "<html>504</html>"), ProviderUnavailable),
    "html-200": (answer(200, HTML_PAGE), MalformedResponse),
    "non-json-200": (answer(200, "OK"), MalformedResponse),
}
NEVER_LEFT = {
    "connect-error": fail(httpx.ConnectError),
    "connect-timeout": fail(httpx.ConnectTimeout),
    "pool-timeout": fail(httpx.PoolTimeout),
    "429": rate_limited(),
}
BLIPS = {
    "read-timeout": (fail(httpx.ReadTimeout), OutcomeUnknown),
    "dropped-connection": (fail(httpx.RemoteProtocolError), OutcomeUnknown),
    "connect-error": (fail(httpx.ConnectError), NotSent),
    "429": (rate_limited(), RateLimited),
    "502": (answer(502, HTML_PAGE), ProviderUnavailable),
    "503": (answer(503, HTML_PAGE), ProviderUnavailable),
    "504": (answer(504, HTML_PAGE), ProviderUnavailable),
}
DOCUMENTED_ERRORS = [
    ("balance", 401, "invalid_key", InvalidKey),
    ("services", 401, "invalid_key", InvalidKey),
    ("prices", 400, "missing_params", MissingParams),
    ("status", 404, "not_found", NotFound),
    ("cancel", 404, "not_found", NotFound),
    ("cancel", 400, "cannot_cancel", CannotCancel),
    ("cancel", 400, "cancel_failed", CancelFailed),
    ("order", 404, "no_stock", NoStock),
    ("order", 402, "insufficient_funds", InsufficientFunds),
]


def test_each_call_goes_to_its_documented_route_with_its_parameters() -> None:
    provider = FakeProvider(lambda request: ENDPOINTS[_route(request)].success(request))
    client = client_for(provider)

    for endpoint in ENDPOINTS.values():
        endpoint.call(client)

    sent = {
        _route(r): (r.method, dict(r.url.params), r.content.decode()) for r in provider.requests
    }
    assert sent == {
        "balance": ("GET", {}, ""),
        "services": ("GET", {}, ""),
        "prices": ("GET", {"service": "1012"}, ""),
        "status": ("GET", {"order_id": "12345678"}, ""),
        "cancel": ("POST", {}, "order_id=12345678&status=8"),
        "order": ("POST", {}, "service=1012&country=1"),
    }
    for request in provider.requests:
        assert request.headers["X-API-KEY"] == SECRET
        assert SECRET not in str(request.url)


def _route(request: httpx.Request) -> str:
    last = request.url.path.rsplit("/", 1)[-1]
    return {"set_status": "cancel"}.get(last, last)


@pytest.mark.parametrize(("outcome", "error"), UNKNOWN_OUTCOMES.values(), ids=UNKNOWN_OUTCOMES)
def test_an_order_is_sent_exactly_once_when_its_outcome_is_unknown(
    outcome: Step, error: type[ProviderError]
) -> None:
    provider = FakeProvider(outcome, answer(200, ORDER))

    with pytest.raises(error):
        client_for(provider, attempts=5).order(WHATSAPP, USA)

    assert len(provider.requests) == 1


@pytest.mark.parametrize("refusal", NEVER_LEFT.values(), ids=NEVER_LEFT)
def test_an_order_is_retried_when_it_provably_never_left(refusal: Step) -> None:
    provider = FakeProvider(refusal, refusal, answer(200, ORDER))

    order = client_for(provider, attempts=3).order(WHATSAPP, USA)

    assert order == Order(order_id="12345678", phone="12025550199", cost=Decimal("2.66"))
    assert len(provider.requests) == 3


def test_an_order_that_never_connects_gives_up_at_the_attempt_limit() -> None:
    provider = FakeProvider(fail(httpx.ConnectError))

    with pytest.raises(NotSent):
        client_for(provider, attempts=3).order(WHATSAPP, USA)

    assert len(provider.requests) == 3


@pytest.mark.parametrize(("blip", "error"), BLIPS.values(), ids=BLIPS)
@pytest.mark.parametrize("name", REPLAY_SAFE)
def test_reads_and_cancels_are_retried_on_blips_up_to_the_attempt_limit(
    name: str, blip: Step, error: type[ProviderError]
) -> None:
    provider = FakeProvider(blip)

    with pytest.raises(error):
        ENDPOINTS[name].call(client_for(provider, attempts=3))

    assert len(provider.requests) == 3


@pytest.mark.parametrize("blip", [blip for blip, _ in BLIPS.values()], ids=BLIPS)
@pytest.mark.parametrize("name", REPLAY_SAFE)
def test_reads_and_cancels_succeed_once_a_blip_passes(name: str, blip: Step) -> None:
    endpoint = ENDPOINTS[name]
    provider = FakeProvider(blip, blip, endpoint.success)

    endpoint.call(client_for(provider, attempts=3))

    assert len(provider.requests) == 3


def test_a_read_stops_retrying_once_its_time_budget_is_spent() -> None:
    provider = FakeProvider(answer(503, HTML_PAGE))

    with pytest.raises(ProviderUnavailable):
        client_for(provider, attempts=100, max_retry_seconds=0.0).balance()

    assert len(provider.requests) == 1


@pytest.mark.parametrize(
    ("name", "status", "code", "error"),
    DOCUMENTED_ERRORS,
    ids=[f"{name}-{code}" for name, _, code, _ in DOCUMENTED_ERRORS],
)
def test_a_documented_error_is_raised_as_its_own_exception_and_never_retried(
    name: str, status: int, code: str, error: type[ProviderRejected]
) -> None:
    provider = FakeProvider(rejection(status, code), ENDPOINTS[name].success)

    with pytest.raises(ProviderRejected) as caught:
        ENDPOINTS[name].call(client_for(provider, attempts=3))

    assert type(caught.value) is error
    assert (caught.value.status, caught.value.code) == (status, code)
    assert len(provider.requests) == 1


def test_an_undocumented_error_code_still_raises_provider_rejected() -> None:
    provider = FakeProvider(rejection(404, "rest_no_route"))

    with pytest.raises(ProviderRejected) as caught:
        client_for(provider).balance()

    assert type(caught.value) is ProviderRejected
    assert (caught.value.status, caught.value.code) == (404, "rest_no_route")
    assert len(provider.requests) == 1


MALFORMED = [
    # (endpoint, HTTP status, body as sent)
    ("balance", 200, HTML_PAGE),
    ("balance", 200, ""),
    ("balance", 200, "OK"),
    ("balance", 200, "[]"),
    ("balance", 200, '"50.00"'),
    ("balance", 200, '{"currency": "USD"}'),
    ("balance", 200, '{"balance": null}'),
    ("balance", 200, '{"balance": true}'),
    ("balance", 200, '{"balance": "lots"}'),
    ("balance", 200, '{"balance": "NaN"}'),
    ("balance", 200, '{"balance": NaN}'),
    ("balance", 200, '{"balance": [50]}'),
    ("balance", 200, "[" * 100_000),
    ("services", 200, '{"status": "success"}'),
    ("services", 200, '{"services": {"1012": "Whatsapp"}}'),
    ("services", 200, '{"services": ["1012"]}'),
    ("services", 200, '{"services": [{"name": "Whatsapp"}]}'),
    ("services", 200, '{"services": [{"id": "x", "name": "Whatsapp"}]}'),
    ("services", 200, '{"services": [{"id": Infinity, "name": "Whatsapp"}]}'),
    ("prices", 200, '{"prices": []}'),
    ("prices", 200, '{"prices": {"1": "cheap"}}'),
    ("prices", 200, '{"prices": {"1": {"country": "US", "id": 1, "count": 1, "rate": 5}}}'),
    ("prices", 200, '{"prices": {"1": {"country": "US", "cost": "x", "count": 1, "rate": 5}}}'),
    ("prices", 200, '{"prices": {"1": {"country": "US", "cost": 1, "rate": 5}}}'),
    ("prices", 200, '{"prices": {"1": {"country": "US", "cost": 1, "count": "many", "rate": 5}}}'),
    (
        "prices",
        200,
        '{"prices": {"1": {"country": "US", "cost": 1, "count": Infinity, "rate": 5}}}',
    ),
    ("prices", 200, '{"prices": {"x": {"country": "US", "cost": 1, "count": 1, "rate": 5}}}'),
    ("order", 200, HTML_PAGE),
    ("order", 200, '{"status": "success", "phone": "12025550199", "cost": 2.66}'),
    ("order", 200, '{"order_id": null, "phone": "12025550199", "cost": 2.66}'),
    ("order", 200, '{"order_id": "", "phone": "12025550199", "cost": 2.66}'),
    ("order", 200, '{"order_id": true, "phone": "12025550199", "cost": 2.66}'),
    ("order", 200, '{"order_id": "12345678", "cost": 2.66}'),
    ("order", 200, '{"order_id": "12345678", "phone": "12025550199"}'),
    ("order", 200, '{"order_id": "12345678", "phone": "12025550199", "cost": "two"}'),
    ("order", 200, '{"order_id": "12345678", "phone": "12025550199", "cost": -2.66}'),
    ("order", 200, '{"order_id": "12345678", "phone": "12025550199", "cost": Infinity}'),
    ("status", 200, "{}"),
    ("status", 200, '{"status": "STATUS_OK"}'),
    ("status", 200, '{"status": "STATUS_OK", "code": null}'),
    ("status", 200, '{"status": "STATUS_OK", "code": ""}'),
    ("status", 200, '{"status": "STATUS_CANCEL"}'),
    ("status", 200, '{"status": ["STATUS_OK"]}'),
    ("cancel", 200, HTML_PAGE),
    ("cancel", 200, "[]"),
    ("status", 404, "<html>Not Found</html>"),
    ("order", 400, '{"message": "an error without a code"}'),
    ("cancel", 400, '["cancel_failed"]'),
]


@pytest.mark.parametrize(
    ("name", "status", "body"), MALFORMED, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(MALFORMED)]
)
def test_an_answer_that_is_not_the_documented_json_raises_malformed_response(
    name: str, status: int, body: str
) -> None:
    provider = FakeProvider(answer(status, body))

    # Anything else escaping (KeyError, TypeError, OverflowError, ...) fails this test.
    with pytest.raises(MalformedResponse):
        ENDPOINTS[name].call(client_for(provider))


@pytest.mark.parametrize("cost", ["2.66", "0.1", "12.345678901234567891", "3"])
def test_cost_parses_to_an_exact_decimal_never_through_a_float(cost: str) -> None:
    order_body = f'{{"order_id": "12345678", "phone": "12025550199", "cost": {cost}}}'
    price_row = f'{{"country": "United States", "id": 1, "cost": {cost}, "count": 1, "rate": 56}}'
    provider = FakeProvider(
        lambda r: answer(
            200, order_body if _route(r) == "order" else f'{{"prices": {{"1": {price_row}}}}}'
        )(r)
    )
    client = client_for(provider)

    order = client.order(WHATSAPP, USA)
    price = client.prices(WHATSAPP)[USA]

    assert order.cost == price.cost == Decimal(cost)
    assert str(order.cost) == str(price.cost) == cost


def test_a_balance_written_as_a_string_keeps_its_cents() -> None:
    balance = client_for(FakeProvider(answer(200, BALANCE))).balance()

    assert balance == Decimal("50.00")
    assert str(balance) == "50.00"


def test_a_waiting_status_has_no_code_and_a_numeric_code_is_kept_as_text() -> None:
    provider = FakeProvider(
        answer(200, {"status": "STATUS_WAIT_CODE"}),
        answer(200, {"status": "STATUS_OK", "code": 654321}),
    )
    client = client_for(provider)

    assert client.status("12345678") == CodeStatus(code=None)
    assert client.status("12345678") == CodeStatus(code="654321")


LOST_ANSWERS = {
    "read-timeout": fail(httpx.ReadTimeout),
    "dropped-connection": fail(httpx.RemoteProtocolError),
    "502": answer(502, HTML_PAGE),
}


@pytest.mark.parametrize("lost", LOST_ANSWERS.values(), ids=LOST_ANSWERS)
def test_a_cancel_failed_after_a_lost_answer_is_marked_replayed(lost: Step) -> None:
    provider = FakeProvider(lost, rejection(400, "cancel_failed"))

    with pytest.raises(CancelFailed) as caught:
        client_for(provider).cancel("12345678")

    assert caught.value.replayed is True
    assert len(provider.requests) == 2


def test_a_plain_cancel_failed_is_not_marked_replayed() -> None:
    provider = FakeProvider(rejection(400, "cancel_failed"))

    with pytest.raises(CancelFailed) as caught:
        client_for(provider).cancel("12345678")

    assert caught.value.replayed is False
    assert len(provider.requests) == 1


@pytest.mark.parametrize(
    "refusal", [fail(httpx.ConnectError), rate_limited()], ids=["connect", "429"]
)
def test_a_cancel_failed_after_a_cancel_that_never_left_is_not_marked_replayed(
    refusal: Step,
) -> None:
    provider = FakeProvider(refusal, rejection(400, "cancel_failed"))

    with pytest.raises(CancelFailed) as caught:
        client_for(provider).cancel("12345678")

    assert caught.value.replayed is False
    assert len(provider.requests) == 2


@pytest.mark.parametrize("name", ENDPOINTS)
def test_each_attempt_takes_one_rate_limit_slot_at_its_endpoints_priority(name: str) -> None:
    endpoint = ENDPOINTS[name]
    throttle = FakeThrottle()
    provider = FakeProvider(fail(httpx.ConnectError), rate_limited(), endpoint.success)

    endpoint.call(client_for(provider, throttle=throttle, attempts=3))

    assert throttle.acquired == [endpoint.priority] * 3
    assert len(provider.requests) == 3


def test_an_order_with_its_slot_already_taken_skips_only_the_first_acquire() -> None:
    throttle = FakeThrottle()
    provider = FakeProvider(fail(httpx.ConnectError), fail(httpx.ConnectError), answer(200, ORDER))

    client_for(provider, throttle=throttle, attempts=3).order(WHATSAPP, USA, slot_acquired=True)

    assert throttle.acquired == [Priority.ORDER, Priority.ORDER]
    assert len(provider.requests) == 3


def test_an_order_with_its_slot_already_taken_acquires_nothing_when_it_succeeds() -> None:
    throttle = FakeThrottle()
    provider = FakeProvider(answer(200, ORDER))

    client_for(provider, throttle=throttle).order(WHATSAPP, USA, slot_acquired=True)

    assert throttle.acquired == []
    assert len(provider.requests) == 1


def test_a_429_pauses_the_shared_limit_for_its_retry_after_instead_of_sleeping_it(
    sleeps: list[float],
) -> None:
    throttle = FakeThrottle()
    provider = FakeProvider(rate_limited("7"), answer(200, BALANCE))

    client_for(provider, throttle=throttle).balance()

    assert throttle.paused == [7.0]
    assert len(sleeps) == 1
    assert sleeps[0] <= 2.0  # the throttle's pause makes the next acquire wait, not tenacity


def test_a_429_without_a_throttle_waits_its_retry_after(sleeps: list[float]) -> None:
    provider = FakeProvider(rate_limited("1.5"), answer(200, BALANCE))

    client_for(provider).balance()

    assert sleeps == [1.5]


@pytest.mark.parametrize(
    ("header", "seconds"), [("3", 3.0), ("0.5", 0.5), ("soon", 2.0), ("inf", 2.0), ("nan", 2.0)]
)
def test_a_429_reports_retry_after_from_its_header_or_two_seconds_if_unreadable(
    header: str, seconds: float
) -> None:
    provider = FakeProvider(rate_limited(header))

    with pytest.raises(RateLimited) as caught:
        client_for(provider, attempts=1).balance()

    assert caught.value.retry_after == seconds


@pytest.mark.parametrize("name", ENDPOINTS)
def test_throttled_propagates_at_once_without_a_retry_or_a_request(name: str) -> None:
    throttle = FakeThrottle(refuse_from=1)
    provider = FakeProvider(ENDPOINTS[name].success)

    with pytest.raises(Throttled) as caught:
        ENDPOINTS[name].call(client_for(provider, throttle=throttle, attempts=3))

    assert caught.value.retry_after == 3.0
    assert len(throttle.acquired) == 1
    assert provider.requests == []


def test_throttled_on_an_orders_retry_propagates_without_another_request() -> None:
    throttle = FakeThrottle(refuse_from=1)
    provider = FakeProvider(fail(httpx.ConnectError), answer(200, ORDER))

    with pytest.raises(Throttled):
        client_for(provider, throttle=throttle, attempts=3).order(WHATSAPP, USA, slot_acquired=True)

    assert len(throttle.acquired) == 1
    assert len(provider.requests) == 1


def test_the_key_never_appears_in_the_clients_repr() -> None:
    client = client_for(FakeProvider(answer(200, BALANCE)))

    assert SECRET not in repr(client)
    assert SECRET not in str(client)


FAILURES: dict[str, Step] = {
    "invalid-key": rejection(401, "invalid_key"),
    "cancel-failed": rejection(400, "cancel_failed"),
    "429": rate_limited(),
    "503": answer(503, HTML_PAGE),
    "html": answer(200, HTML_PAGE),
    "not-an-object": answer(200, ["not", "an", "object"]),
    "read-timeout": fail(httpx.ReadTimeout),
    "connect-error": fail(httpx.ConnectError),
    "dropped-connection": fail(httpx.RemoteProtocolError),
}


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES)
@pytest.mark.parametrize("name", ENDPOINTS)
def test_the_key_never_appears_in_a_raised_exception_or_a_log_line(
    name: str, failure: Step
) -> None:
    provider = FakeProvider(failure)

    with capture_logs() as logs, pytest.raises(ProviderError) as caught:
        ENDPOINTS[name].call(client_for(provider, attempts=2))

    _no_key_in(caught.value, SECRET)
    assert SECRET not in repr(logs)
