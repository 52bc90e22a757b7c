"""Hostile answers the client must not trust (issue 10): a Retry-After of a day, a 200 whose
body is an error or nothing documented, an order whose cost cannot be used, a slow read."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

import httpx
import pytest
import redis
import tenacity
from structlog.testing import capture_logs

import orchestrator.provider.client
from orchestrator.errors import (
    CancelFailed,
    CannotCancel,
    InsufficientFunds,
    InvalidKey,
    MalformedResponse,
    MissingParams,
    NoStock,
    NotFound,
    OutcomeUnknown,
    ProviderRejected,
    ProviderUnavailable,
    RateLimited,
    Throttled,
    UnpricedOrder,
    UnusableOrder,
)
from orchestrator.provider.client import LegitSMSClient
from orchestrator.provider.ratelimit import Priority, SharedRateLimiter
from orchestrator.provider.types import Order, Service
from tests.test_client import (
    BASE_URL,
    CANCELLED,
    ENDPOINTS,
    HTML_PAGE,
    ORDER,
    SECRET,
    SERVICES,
    USA,
    WHATSAPP,
    FakeProvider,
    FakeThrottle,
    Step,
    answer,
    fail,
    rate_limited,
    sleeps,  # noqa: F401  (autouse: tenacity's back-off recorded, not slept)
)

# -- item 5: a Retry-After is capped ------------------------------------------------------


def test_a_retry_after_of_a_day_pauses_the_shared_limit_only_for_the_cap() -> None:
    throttle = FakeThrottle()
    provider = FakeProvider(
        rate_limited("100000"), answer(200, {"balance": "1", "currency": "USD"})
    )
    client = LegitSMSClient(
        BASE_URL, SECRET, throttle=throttle, transport=provider_transport(provider)
    )

    with capture_logs() as logs:
        client.balance()

    assert throttle.paused == [120.0]  # the default cap
    [warning] = [e for e in logs if e["event"] == "provider_rate_limited"]
    assert warning["log_level"] == "warning"
    assert warning["retry_after_header"] == "100000"
    assert warning["retry_after"] == 120.0


@pytest.mark.parametrize(("header", "seconds"), [("100000", 30.0), ("29", 29.0), ("1e308", 30.0)])
def test_rate_limited_carries_the_capped_retry_after(header: str, seconds: float) -> None:
    provider = FakeProvider(rate_limited(header))
    client = LegitSMSClient(
        BASE_URL,
        SECRET,
        attempts=1,
        retry_after_cap=30.0,
        transport=provider_transport(provider),
    )

    with pytest.raises(RateLimited) as caught:
        client.balance()

    assert caught.value.retry_after == seconds


def test_a_huge_retry_after_holds_every_process_on_the_key_no_longer_than_the_cap(
    redis_url: str,
) -> None:
    """The real shared limiter in Redis: what another process on the key is told to wait."""
    connection = redis.Redis.from_url(redis_url)
    limiter = SharedRateLimiter(connection, key_id="issue10", rate=0, max_wait=1.0)
    provider = FakeProvider(rate_limited("100000"))
    client = LegitSMSClient(
        BASE_URL, SECRET, throttle=limiter, attempts=1, transport=provider_transport(provider)
    )
    with pytest.raises(RateLimited):
        client.balance()

    other = SharedRateLimiter(connection, key_id="issue10", rate=0, max_wait=1.0)
    with pytest.raises(Throttled) as caught:
        other.acquire(Priority.CANCEL)
    assert 100 < caught.value.retry_after <= 120.0


# -- item 6: a 2xx counts only when its body is the documented success ---------------------


@pytest.mark.parametrize(
    ("code", "error"), [("cancel_failed", CancelFailed), ("cannot_cancel", CannotCancel)]
)
def test_a_200_cancel_carrying_a_refusal_raises_that_refusal(
    code: str, error: type[ProviderRejected]
) -> None:
    body = {"code": code, "message": "Order expired or already finished", "data": {"status": 400}}
    provider = FakeProvider(answer(200, body), answer(200, CANCELLED))

    with pytest.raises(ProviderRejected) as caught:
        client_with(provider).cancel("12345678")

    assert type(caught.value) is error
    assert (caught.value.status, caught.value.code) == (200, code)
    assert caught.value.replayed is False
    assert len(provider.requests) == 1


def test_a_200_cancel_failed_after_a_lost_answer_is_marked_replayed() -> None:
    provider = FakeProvider(fail(httpx.ReadTimeout), answer(200, {"code": "cancel_failed"}))

    with pytest.raises(CancelFailed) as caught:
        client_with(provider).cancel("12345678")

    assert caught.value.replayed is True


UNDOCUMENTED_CANCEL_SUCCESS = {
    "empty": {},
    "status-error": {"status": "error", "message": "Order cancelled and refunded"},
    "status-missing": {"message": "Order cancelled and refunded"},
    "status-not-a-string": {"status": ["success"]},
    "undocumented-code": {"code": "rest_no_route", "message": "No route"},
    "html": HTML_PAGE,
}


@pytest.mark.parametrize(
    "body", UNDOCUMENTED_CANCEL_SUCCESS.values(), ids=UNDOCUMENTED_CANCEL_SUCCESS
)
def test_a_200_cancel_without_the_documented_success_raises_malformed_and_is_not_resent(
    body: object,
) -> None:
    provider = FakeProvider(answer(200, body), answer(200, CANCELLED))

    with pytest.raises(MalformedResponse):
        client_with(provider).cancel("12345678")

    assert len(provider.requests) == 1  # the cancel may have acted: settle reads /status


def test_a_cancel_is_still_resent_when_it_provably_never_left_or_met_a_502() -> None:
    provider = FakeProvider(
        fail(httpx.ConnectError), rate_limited(), answer(502, HTML_PAGE), answer(200, CANCELLED)
    )

    client_with(provider, attempts=4).cancel("12345678")

    assert len(provider.requests) == 4


ERRORS_IN_A_200 = [
    ("balance", "invalid_key", InvalidKey),
    ("services", "invalid_key", InvalidKey),
    ("prices", "missing_params", MissingParams),
    ("status", "not_found", NotFound),
    ("order", "no_stock", NoStock),
    ("order", "insufficient_funds", InsufficientFunds),
]


@pytest.mark.parametrize(
    ("name", "code", "error"), ERRORS_IN_A_200, ids=[f"{n}-{c}" for n, c, _ in ERRORS_IN_A_200]
)
def test_a_documented_error_code_in_a_200_raises_that_rejection_without_a_retry(
    name: str, code: str, error: type[ProviderRejected]
) -> None:
    body = {"code": code, "message": code.replace("_", " "), "data": {"status": 400}}
    provider = FakeProvider(answer(200, body), ENDPOINTS[name].success)

    with pytest.raises(ProviderRejected) as caught:
        ENDPOINTS[name].call(client_with(provider))

    assert type(caught.value) is error
    assert (caught.value.status, caught.value.code) == (200, code)
    assert len(provider.requests) == 1


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("services", {"status": "error", "services": [{"id": "1012", "name": "Whatsapp"}]}),
        ("prices", {"status": "failed", "prices": {}}),
        ("status", {"status": "STATUS_WAIT_CODE ", "code": "123456"}),
    ],
)
def test_a_read_whose_200_says_another_status_than_success_raises_malformed(
    name: str, body: object
) -> None:
    provider = FakeProvider(answer(200, body))

    with pytest.raises(MalformedResponse):
        ENDPOINTS[name].call(client_with(provider))


def test_an_sms_code_that_looks_like_an_error_code_is_still_a_code() -> None:
    provider = FakeProvider(answer(200, {"status": "STATUS_OK", "code": "not_found"}))

    assert client_with(provider).status("12345678").code == "not_found"


# -- item 7: an order answer with a usable order_id is never thrown away --------------------

UNUSABLE_COSTS = {
    "negative": "-1",
    "text": '"abc"',
    "1e15": "1e15",
    "1e999": "1e999",
    "infinity": "Infinity",
    "nan": "NaN",
    "null": "null",
    "bool": "true",
    "list": "[2.66]",
}


@pytest.mark.parametrize("cost", UNUSABLE_COSTS.values(), ids=UNUSABLE_COSTS)
def test_an_order_with_an_unusable_cost_raises_unpriced_order_with_its_id_and_phone(
    cost: str,
) -> None:
    body = f'{{"status": "success", "order_id": "777", "phone": "12025550199", "cost": {cost}}}'
    provider = FakeProvider(answer(200, body), answer(200, ORDER))

    with pytest.raises(UnpricedOrder) as caught:
        client_with(provider).order(WHATSAPP, USA)

    assert (caught.value.order_id, caught.value.phone, caught.value.cost) == (
        "777",
        "12025550199",
        None,
    )
    assert len(provider.requests) == 1


def test_an_order_without_a_cost_raises_unpriced_order() -> None:
    body = {"status": "success", "order_id": 777, "phone": 12025550199}
    with pytest.raises(UnpricedOrder) as caught:
        client_with(FakeProvider(answer(200, body))).order(WHATSAPP, USA)
    assert (caught.value.order_id, caught.value.phone) == ("777", "12025550199")


@pytest.mark.parametrize(
    "phone",
    [None, "", "1" * 200, "1202\n5550199", "\x1b[31m12025550199"],
    ids=["none", "empty", "200-digits", "newline", "escape"],
)
def test_an_order_with_an_unusable_phone_raises_unusable_order_with_its_cost(
    phone: str | None,
) -> None:
    body = {"status": "success", "order_id": "777", "phone": phone, "cost": 2.66}
    with pytest.raises(UnusableOrder) as caught:
        client_with(FakeProvider(answer(200, body))).order(WHATSAPP, USA)
    assert type(caught.value) is UnusableOrder
    assert (caught.value.order_id, caught.value.phone, caught.value.cost) == (
        "777",
        None,
        Decimal("2.66"),
    )


@pytest.mark.parametrize(
    "noise",
    [{"status": "error"}, {"code": "no_stock"}, {"status": "success", "code": "cancel_failed"}],
)
def test_an_order_id_beside_an_error_is_kept_as_an_unusable_order(noise: dict[str, str]) -> None:
    body = {"order_id": "777", "phone": "12025550199", "cost": 2.66, **noise}
    with pytest.raises(UnusableOrder) as caught:
        client_with(FakeProvider(answer(200, body))).order(WHATSAPP, USA)
    assert caught.value.order_id == "777"
    assert caught.value.cost == Decimal("2.66")


ABSURD_IDS = {
    "10k-digits": "7" * 10_000,
    "newline": "77\n7",
    "nul": "77\x007",
    "blank": " ",
    "space": "7 7",
}


@pytest.mark.parametrize("order_id", ABSURD_IDS.values(), ids=ABSURD_IDS)
def test_an_absurd_order_id_is_refused_with_a_bounded_message(order_id: str) -> None:
    body = {"status": "success", "order_id": order_id, "phone": "12025550199", "cost": 2.66}
    with pytest.raises(MalformedResponse) as caught:
        client_with(FakeProvider(answer(200, body))).order(WHATSAPP, USA)
    assert not isinstance(caught.value, UnusableOrder)
    assert len(str(caught.value)) < 300


def test_a_documented_order_answer_is_still_an_order() -> None:
    order = client_with(FakeProvider(answer(200, ORDER))).order(WHATSAPP, USA)
    assert order == Order(order_id="12345678", phone="12025550199", cost=Decimal("2.66"))


# -- item 8: reads ride out a slow answer and 5xx for their patience ------------------------


class FakeTime:
    """Monotonic time that moves only when a scripted answer says it took a while."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    clock = FakeTime()
    fake = SimpleNamespace(monotonic=clock.monotonic, time=clock.monotonic)
    monkeypatch.setattr(tenacity, "time", fake)
    monkeypatch.setattr(orchestrator.provider.client, "time", fake, raising=False)
    return clock


def slow(clock: FakeTime, seconds: float, then: Step) -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        clock.now += seconds
        return then(request)

    return step


def test_one_read_timeout_longer_than_the_patience_is_still_retried(fake_time: FakeTime) -> None:
    # A 15 s read timeout against the default patience: the cron submit.
    provider = FakeProvider(slow(fake_time, 15.0, fail(httpx.ReadTimeout)), answer(200, SERVICES))
    client = LegitSMSClient(BASE_URL, SECRET, transport=provider_transport(provider))

    assert client.services() == [Service(id=1012, name="Whatsapp")]
    assert len(provider.requests) == 2


def test_a_read_gives_up_once_an_attempt_begun_after_its_patience_fails(
    fake_time: FakeTime,
) -> None:
    provider = FakeProvider(slow(fake_time, 15.0, fail(httpx.ReadTimeout)))
    client = LegitSMSClient(
        BASE_URL, SECRET, attempts=50, patience=20.0, transport=provider_transport(provider)
    )

    with pytest.raises(OutcomeUnknown):
        client.services()

    # Begun at 0 s and 15 s (within 20 s: each may be retried) and 30 s (past it: the last).
    assert len(provider.requests) == 3


def test_an_order_is_still_sent_once_after_a_slow_answer(fake_time: FakeTime) -> None:
    provider = FakeProvider(slow(fake_time, 15.0, fail(httpx.ReadTimeout)), answer(200, ORDER))
    client = LegitSMSClient(
        BASE_URL, SECRET, attempts=50, patience=600.0, transport=provider_transport(provider)
    )

    with pytest.raises(OutcomeUnknown):
        client.order(WHATSAPP, USA)

    assert len(provider.requests) == 1


def test_the_clis_reads_ride_out_about_a_minute_of_5xx_and_workers_give_up_sooner(
    fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    from orchestrator.config import Settings
    from orchestrator.lifecycle.wiring import make_client, make_throttle

    monkeypatch.setenv("LEGITSMS_API_KEY", SECRET)
    settings = Settings(rate_limit=0)

    def outage() -> FakeProvider:
        # 503s, each answered after 4 s, for 48 s; then the provider is back.
        steps = [slow(fake_time, 4.0, answer(503, HTML_PAGE))] * 12
        return FakeProvider(*steps, answer(200, SERVICES))

    cli = make_client(settings, make_throttle(settings, redis_url, patient=True))
    cli._transport = httpx.MockTransport(provider := outage())
    assert cli.services() == [Service(id=1012, name="Whatsapp")]
    assert len(provider.requests) == 13

    worker = make_client(settings, make_throttle(settings, redis_url))
    worker._transport = httpx.MockTransport(provider := outage())
    with pytest.raises(ProviderUnavailable):
        worker.services()
    assert 2 <= len(provider.requests) < 13


# -- helpers ----------------------------------------------------------------------------------


def provider_transport(provider: FakeProvider) -> httpx.MockTransport:
    return httpx.MockTransport(provider)


def client_with(provider: FakeProvider, *, attempts: int = 3) -> LegitSMSClient:
    return LegitSMSClient(
        BASE_URL, SECRET, attempts=attempts, transport=provider_transport(provider)
    )
