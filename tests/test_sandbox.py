"""The sandbox answers like the LegitSMS V2 reference, over real HTTP, and keeps honest books."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from orchestrator.cli import sandbox as sandbox_cli
from orchestrator.errors import ConfigError
from orchestrator.sandbox.config import DEMO_API_KEY, SandboxConfig
from orchestrator.sandbox.server import SandboxServer
from orchestrator.sandbox.simulator import API_PREFIX

WHATSAPP, FACEBOOK, USA, UK = 1012, 1010, 1, 16
OTHER_KEY = "sk_test_other"


class FakeClock:
    """A clock the test moves by hand, so ages and delays need no sleeping."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Sandbox:
    """A running server, a client holding the demo key in ``X-API-KEY``, and the server's clock."""

    server: SandboxServer
    api: httpx.Client
    clock: FakeClock
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, **kwargs: Any) -> httpx.Client:
        client = httpx.Client(base_url=self.server.url, **kwargs)
        self.clients.append(client)
        return client

    def order(self, service: int = WHATSAPP, country: int = USA) -> str:
        response = self.api.post("/order", data={"service": service, "country": country})
        assert response.status_code == 200, response.text
        order_id: str = response.json()["order_id"]
        return order_id

    def status(self, order_id: str) -> httpx.Response:
        return self.api.get("/status", params={"order_id": order_id})

    def cancel(self, order_id: str) -> httpx.Response:
        return self.api.post("/set_status", data={"order_id": order_id, "status": 8})


StartSandbox = Callable[..., Sandbox]


@pytest.fixture
def start() -> Iterator[StartSandbox]:
    started: list[Sandbox] = []

    def _start(
        *, real_time: bool = False, config: SandboxConfig | None = None, **settings: Any
    ) -> Sandbox:
        clock = FakeClock()
        config = config or SandboxConfig(**settings)
        server = SandboxServer(config, clock=time.time if real_time else clock).start()
        headers = {"X-API-KEY": config.api_keys[0]}
        api = httpx.Client(base_url=server.url, headers=headers, timeout=5)
        started.append(Sandbox(server, api, clock))
        return started[-1]

    yield _start
    for sandbox in started:
        for client in [sandbox.api, *sandbox.clients]:
            client.close()
        sandbox.server.stop()


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert body["data"] == {"status": response.status_code}
    return response.status_code, body["code"], body["message"]


def ledger(sandbox: Sandbox) -> dict[str, Any]:
    response = sandbox.api.get(sandbox.server.root_url + "/_sandbox/ledger")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


def test_balance_answers_to_the_key_in_the_header_or_in_the_api_key_parameter(
    start: StartSandbox,
) -> None:
    sandbox = start(balance=Decimal("50"))
    plain = sandbox.client()

    by_header = sandbox.api.get("/balance")
    by_param = plain.get("/balance", params={"api_key": DEMO_API_KEY})

    assert by_header.status_code == by_param.status_code == 200
    assert by_header.json() == by_param.json() == {"balance": "50.00", "currency": "USD"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/balance"),
        ("GET", "/services"),
        ("GET", "/prices?service=1012"),
        ("POST", "/order?service=1012&country=1"),
        ("GET", "/status?order_id=12345678"),
        ("POST", "/set_status?order_id=12345678&status=8"),
    ],
)
@pytest.mark.parametrize("key", [None, "sk_live_wrong"])
def test_every_endpoint_refuses_a_missing_or_wrong_key_with_401_invalid_key(
    start: StartSandbox, method: str, path: str, key: str | None
) -> None:
    sandbox = start()
    headers = {"X-API-KEY": key} if key else {}

    response = sandbox.client(headers=headers).request(method, path)

    assert error(response) == (401, "invalid_key", "Invalid API Key")
    assert ledger(sandbox)["orders"] == []


def test_services_lists_every_service_with_its_id_as_a_string(start: StartSandbox) -> None:
    response = start().api.get("/services")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert {"id": "1012", "name": "Whatsapp"} in body["services"]
    assert {"id": "924", "name": "Tiktok/Douyin"} in body["services"]
    assert all(isinstance(service["id"], str) for service in body["services"])


def test_prices_lists_cost_stock_and_rate_per_country_keyed_by_country_id(
    start: StartSandbox,
) -> None:
    response = start().api.get("/prices", params={"service": WHATSAPP})

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert body["prices"]["1"] == {
        "country": "United States",
        "id": 1,
        "cost": 2.66,
        "count": 3868,
        "rate": 56,
    }
    assert body["prices"]["16"]["country"] == "United Kingdom"


@pytest.mark.parametrize("params", [{}, {"service": ""}, {"service": "999"}, {"service": "abc"}])
def test_prices_without_a_known_service_answers_400_missing_params(
    start: StartSandbox, params: dict[str, str]
) -> None:
    response = start().api.get("/prices", params=params)

    assert error(response) == (400, "missing_params", "Service code required")


def test_an_order_charges_its_cost_and_takes_one_number_from_stock(start: StartSandbox) -> None:
    sandbox = start()

    response = sandbox.api.post("/order", data={"service": WHATSAPP, "country": USA})

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert body["cost"] == 2.66
    assert body["msg"] == "Waiting for SMS"
    assert len(body["order_id"]) == 8
    assert body["order_id"].isdigit()
    assert body["phone"].startswith("1")
    assert body["phone"].isdigit()
    assert sandbox.api.get("/balance").json()["balance"] == "997.34"
    prices = sandbox.api.get("/prices", params={"service": WHATSAPP}).json()["prices"]
    assert prices["1"]["count"] == 3867


@pytest.mark.parametrize("where", ["query", "form", "json"])
def test_order_parameters_are_read_from_the_query_a_form_or_a_json_body(
    start: StartSandbox, where: str
) -> None:
    sandbox = start()
    params = {"service": str(WHATSAPP), "country": str(UK)}

    if where == "query":
        response = sandbox.api.post("/order", params=params)
    elif where == "form":
        response = sandbox.api.post("/order", data=params)
    else:
        response = sandbox.api.post("/order", json={"service": WHATSAPP, "country": UK})

    assert response.status_code == 200
    assert response.json()["cost"] == 1.95


@pytest.mark.parametrize("params", [{}, {"service": "1012"}, {"country": "1"}, {"country": ""}])
def test_an_order_without_country_or_service_answers_400_missing_params(
    start: StartSandbox, params: dict[str, str]
) -> None:
    response = start().api.post("/order", data=params)

    assert error(response)[:2] == (400, "missing_params")


@pytest.mark.parametrize(
    ("service", "country"), [(999, USA), (WHATSAPP, 999), ("abc", USA), (FACEBOOK, UK)]
)
def test_an_order_for_an_unknown_or_sold_out_offer_answers_404_no_stock(
    start: StartSandbox, service: int | str, country: int
) -> None:
    sandbox = start()

    response = sandbox.api.post("/order", data={"service": service, "country": country})

    assert error(response) == (404, "no_stock", "Out of stock")
    assert ledger(sandbox)["totals"]["charged"] == "0.00"


def test_the_last_number_in_stock_sells_once(start: StartSandbox) -> None:
    catalog = {"services": [{"id": 1, "name": "Rare", "prices": {1: {"cost": 1, "count": 1}}}]}
    sandbox = start(config=SandboxConfig.from_mapping(catalog))

    first = sandbox.api.post("/order", data={"service": 1, "country": USA})
    second = sandbox.api.post("/order", data={"service": 1, "country": USA})

    assert first.status_code == 200
    assert error(second)[:2] == (404, "no_stock")


def test_an_order_costing_more_than_the_balance_answers_402_and_charges_nothing(
    start: StartSandbox,
) -> None:
    sandbox = start(balance=Decimal("2.00"))

    response = sandbox.api.post("/order", data={"service": WHATSAPP, "country": USA})

    assert error(response) == (402, "insufficient_funds", "Balance low")
    assert sandbox.api.get("/balance").json()["balance"] == "2.00"


def test_status_waits_until_the_code_is_due_then_returns_it_every_time(
    start: StartSandbox,
) -> None:
    sandbox = start(code_delay=(10.0, 10.0), never_ratio=0.0)
    order_id = sandbox.order()

    sandbox.clock.advance(9.9)
    waiting = sandbox.status(order_id)
    sandbox.clock.advance(0.2)
    first = sandbox.status(order_id)
    sandbox.clock.advance(5000)
    later = sandbox.status(order_id)

    assert waiting.status_code == 200
    assert waiting.json() == {"status": "STATUS_WAIT_CODE"}
    assert first.json()["status"] == "STATUS_OK"
    assert len(first.json()["code"]) == 6
    assert later.json() == first.json()
    (order,) = ledger(sandbox)["orders"]
    assert order["state"] == "received"
    assert order["code"] == first.json()["code"]
    assert order["code_available_at"] == pytest.approx(order["created_at"] + 10)
    assert order["code_read_at"] == pytest.approx(order["created_at"] + 10.1)


def test_status_of_another_keys_order_or_an_unknown_one_answers_404_not_found(
    start: StartSandbox,
) -> None:
    sandbox = start(api_keys=(DEMO_API_KEY, OTHER_KEY))
    order_id = sandbox.order()
    other = sandbox.client(headers={"X-API-KEY": OTHER_KEY})

    foreign = other.get("/status", params={"order_id": order_id})
    unknown = sandbox.status("99999999")

    assert error(foreign) == (404, "not_found", "Order not found")
    assert error(unknown) == (404, "not_found", "Order not found")
    assert other.get("/balance").json()["balance"] == "1000.00"
    assert sandbox.api.get("/balance").json()["balance"] == "997.34"


def test_status_without_an_order_id_answers_400_missing_params(start: StartSandbox) -> None:
    response = start().api.get("/status")

    assert error(response)[:2] == (400, "missing_params")


def test_a_cancel_before_the_minimum_age_is_refused_with_cancel_failed(
    start: StartSandbox,
) -> None:
    sandbox = start(never_ratio=1.0)
    order_id = sandbox.order()
    sandbox.clock.advance(119)

    response = sandbox.cancel(order_id)

    assert error(response) == (400, "cancel_failed", "Order cannot be cancelled yet")
    assert ledger(sandbox)["totals"]["refunded"] == "0.00"


def test_a_cancel_after_the_minimum_age_refunds_the_cost(start: StartSandbox) -> None:
    sandbox = start(never_ratio=1.0)
    order_id = sandbox.order()
    sandbox.clock.advance(120)

    response = sandbox.api.post("/set_status", json={"order_id": order_id, "status": 8})

    assert response.status_code == 200
    assert response.json() == {"status": "success", "message": "Order cancelled and refunded"}
    assert sandbox.api.get("/balance").json()["balance"] == "1000.00"
    books = ledger(sandbox)
    assert books["totals"] == {"charged": "2.66", "refunded": "2.66", "net_spend": "0.00"}
    assert books["orders"][0]["state"] == "cancelled"
    assert books["orders"][0]["refunded"] is True


def test_a_second_cancel_is_refused_and_refunds_nothing(start: StartSandbox) -> None:
    sandbox = start(never_ratio=1.0)
    order_id = sandbox.order()
    sandbox.clock.advance(200)
    sandbox.cancel(order_id)

    again = sandbox.cancel(order_id)

    assert error(again) == (400, "cancel_failed", "Order expired or already finished")
    assert sandbox.api.get("/balance").json()["balance"] == "1000.00"


def test_a_cancel_after_the_code_arrived_answers_cannot_cancel(start: StartSandbox) -> None:
    sandbox = start(never_ratio=0.0, code_delay=(130.0, 130.0))
    order_id = sandbox.order()
    sandbox.clock.advance(131)

    response = sandbox.cancel(order_id)

    assert error(response) == (400, "cannot_cancel", "Code already received")
    assert ledger(sandbox)["totals"]["refunded"] == "0.00"


@pytest.mark.parametrize(
    "form", [{"status": "1"}, {"status": ""}, {}, {"status": "8", "order_id": ""}]
)
def test_set_status_without_status_8_and_an_order_id_answers_400_missing_params(
    start: StartSandbox, form: dict[str, str]
) -> None:
    sandbox = start(never_ratio=1.0)
    order_id = sandbox.order()
    sandbox.clock.advance(200)

    response = sandbox.api.post("/set_status", data={"order_id": order_id, **form})

    assert error(response)[:2] == (400, "missing_params")


def test_set_status_for_an_unknown_order_answers_404_not_found(start: StartSandbox) -> None:
    response = start().cancel("99999999")

    assert error(response) == (404, "not_found", "Order not found")


def test_a_cancelled_order_never_gets_its_code(start: StartSandbox) -> None:
    sandbox = start(never_ratio=0.0, code_delay=(300.0, 300.0))
    order_id = sandbox.order()
    sandbox.clock.advance(150)
    assert sandbox.cancel(order_id).status_code == 200

    sandbox.clock.advance(200)

    assert sandbox.status(order_id).json() == {"status": "STATUS_WAIT_CODE"}
    (order,) = ledger(sandbox)["orders"]
    assert order["state"] == "cancelled"
    assert order["code"] is None
    assert order["code_available_at"] is None


def test_an_order_without_a_code_expires_unrefunded_and_can_no_longer_be_cancelled(
    start: StartSandbox,
) -> None:
    sandbox = start(never_ratio=0.0, code_delay=(1300.0, 1300.0))
    order_id = sandbox.order()
    sandbox.clock.advance(1200)

    cancel = sandbox.cancel(order_id)
    sandbox.clock.advance(200)
    status = sandbox.status(order_id)

    assert error(cancel) == (400, "cancel_failed", "Order expired or already finished")
    assert status.json() == {"status": "STATUS_WAIT_CODE"}
    books = ledger(sandbox)
    assert books["orders"][0]["state"] == "expired"
    assert books["orders"][0]["refunded"] is False
    assert books["totals"]["net_spend"] == "2.66"
    assert books["balance"] == "997.34"


def test_codes_arrive_after_the_configured_delay_in_real_time_and_some_never_arrive(
    start: StartSandbox,
) -> None:
    sandbox = start(real_time=True, code_delay=(0.2, 0.3), never_ratio=0.5, seed=3)
    order_ids = [sandbox.order(service=924, country=6) for _ in range(40)]
    early = [sandbox.status(order_id).json()["status"] for order_id in order_ids]

    time.sleep(0.45)
    late = [sandbox.status(order_id).json()["status"] for order_id in order_ids]

    assert early.count("STATUS_OK") < late.count("STATUS_OK")
    assert 10 <= late.count("STATUS_OK") <= 30
    for order in ledger(sandbox)["orders"]:
        if order["code_available_at"] is not None:
            delay = order["code_available_at"] - order["created_at"]
            assert 0.2 <= delay <= 0.3


def test_by_default_the_advertised_success_rate_decides_how_many_codes_arrive(
    start: StartSandbox,
) -> None:
    sandbox = start()
    for _ in range(300):
        sandbox.order(service=WHATSAPP, country=22)  # rate 44
    sandbox.clock.advance(100)

    received = ledger(sandbox)["order_states"]["received"]

    assert 0.34 <= received / 300 <= 0.54


def test_the_rate_limit_answers_429_with_retry_after_until_the_bucket_refills(
    start: StartSandbox,
) -> None:
    sandbox = start(rate_limit=5, api_keys=(DEMO_API_KEY, OTHER_KEY))
    allowed = [sandbox.api.get("/balance").status_code for _ in range(5)]

    refused = sandbox.api.get("/balance")
    other_key = sandbox.client(headers={"X-API-KEY": OTHER_KEY}).get("/balance")
    sandbox.clock.advance(0.2)
    refilled = sandbox.api.get("/balance")

    assert allowed == [200] * 5
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert refused.json() == {
        "code": "rate_limited",
        "message": "Too many requests",
        "data": {"status": 429},
    }
    assert other_key.status_code == 200
    assert refilled.status_code == 200
    assert ledger(sandbox)["rate_limited"] == 1


def test_a_5xx_fault_answers_an_html_502_or_503_without_acting(start: StartSandbox) -> None:
    sandbox = start(fault_5xx=1.0)

    response = sandbox.api.post("/order", data={"service": WHATSAPP, "country": USA})

    assert response.status_code in (502, 503)
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<html>")
    books = ledger(sandbox)
    assert books["orders"] == []
    assert books["faults"] == {"5xx": 1}


def test_a_429_fault_answers_retry_after_without_acting(start: StartSandbox) -> None:
    sandbox = start(fault_429=1.0)

    response = sandbox.api.post("/order", data={"service": WHATSAPP, "country": USA})

    assert error(response) == (429, "rate_limited", "Too many requests")
    assert response.headers["Retry-After"] == "1"
    books = ledger(sandbox)
    assert books["orders"] == []
    assert books["rate_limited"] == 1


def test_a_non_json_fault_answers_200_with_an_html_page_without_acting(
    start: StartSandbox,
) -> None:
    sandbox = start(fault_non_json=1.0)

    response = sandbox.api.post("/order", data={"service": WHATSAPP, "country": USA})

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert ledger(sandbox)["orders"] == []


def test_a_slow_fault_acts_but_answers_too_late_for_a_client_timeout(
    start: StartSandbox,
) -> None:
    sandbox = start(fault_slow=1.0, slow_seconds=0.5)
    impatient = sandbox.client(headers={"X-API-KEY": DEMO_API_KEY}, timeout=0.1)

    with pytest.raises(httpx.ReadTimeout):
        impatient.post("/order", data={"service": WHATSAPP, "country": USA})

    books = ledger(sandbox)
    assert len(books["orders"]) == 1
    assert books["totals"]["charged"] == "2.66"
    assert books["faults"] == {"slow": 1}


def test_a_dropped_order_is_charged_but_gets_no_answer(start: StartSandbox) -> None:
    sandbox = start(fault_drop_order=1.0)

    with pytest.raises(httpx.RemoteProtocolError):
        sandbox.api.post("/order", data={"service": WHATSAPP, "country": USA})
    balance = sandbox.api.get("/balance")

    assert balance.json()["balance"] == "997.34"
    books = ledger(sandbox)
    assert len(books["orders"]) == 1
    assert books["faults"] == {"drop_order": 1}
    assert sandbox.server.ledger.requests()[0][1:] == ("POST /order", 0)


def _replay(sandbox: Sandbox) -> list[tuple[int, str]]:
    answers = []
    for _ in range(20):
        response = sandbox.api.post("/order", data={"service": 924, "country": 6})
        answers.append((response.status_code, response.text))
        if response.status_code == 200 and response.text.startswith("{"):
            status = sandbox.status(response.json()["order_id"])
            answers.append((status.status_code, status.text))
    return answers


def test_the_same_seed_gives_the_same_orders_codes_and_faults(start: StartSandbox) -> None:
    settings: dict[str, Any] = {"seed": 42, "code_delay": (0.0, 0.0), "never_ratio": 0.5}
    first, second = (start(fault_5xx=0.3, fault_non_json=0.2, **settings) for _ in range(2))

    answers = _replay(first), _replay(second)

    assert answers[0] == answers[1]
    assert any(status in (502, 503) for status, _ in answers[0])
    assert any('"STATUS_OK"' in text for _, text in answers[0])
    assert any('"STATUS_WAIT_CODE"' in text for _, text in answers[0])
    assert any(text.startswith("<html>") for _, text in answers[0])


def test_a_different_seed_gives_different_orders(start: StartSandbox) -> None:
    first, second = start(seed=1), start(seed=2)

    assert _replay(first) != _replay(second)


def test_the_ledger_endpoint_shows_orders_totals_and_request_counts(start: StartSandbox) -> None:
    sandbox = start(never_ratio=1.0)
    cancelled, kept = sandbox.order(), sandbox.order(service=924, country=UK)
    sandbox.clock.advance(150)
    sandbox.cancel(cancelled)

    books = ledger(sandbox)

    assert books["balance"] == "999.70"
    assert books["balances"] == ["999.70"]
    assert books["totals"] == {"charged": "2.96", "refunded": "2.66", "net_spend": "0.30"}
    assert books["order_states"] == {"waiting": 1, "received": 0, "cancelled": 1, "expired": 0}
    assert books["requests"] == {"POST /order": 2, "POST /set_status": 1}
    assert books["request_log_size"] == 3
    assert [order["order_id"] for order in books["orders"]] == [cancelled, kept]
    assert set(books["orders"][1]) == {
        "order_id",
        "account",
        "service_id",
        "country_id",
        "phone",
        "cost",
        "created_at",
        "code",
        "code_available_at",
        "code_read_at",
        "state",
        "refunded",
        "cancelled_at",
    }
    assert books["orders"][1]["cost"] == "0.30"


def test_the_request_log_lists_each_api_call_with_its_status_from_an_offset(
    start: StartSandbox,
) -> None:
    sandbox = start()
    sandbox.api.get("/balance")
    sandbox.api.get("/prices")
    sandbox.client().get("/services")
    url = sandbox.server.root_url + "/_sandbox/requests"

    everything = sandbox.api.get(url).json()
    tail = sandbox.api.get(url, params={"offset": 1}).json()

    assert [(r["endpoint"], r["status"]) for r in everything["requests"]] == [
        ("GET /balance", 200),
        ("GET /prices", 400),
        ("GET /services", 401),
    ]
    assert everything["requests"][0]["at"] == sandbox.clock.now
    assert everything["next_offset"] == 3
    assert tail["requests"] == everything["requests"][1:]


def test_the_api_key_never_appears_in_the_ledger_or_the_request_log(start: StartSandbox) -> None:
    sandbox = start(never_ratio=0.0, code_delay=(0.0, 0.0))
    plain = sandbox.client()
    order_id = plain.post("/order", params={"api_key": DEMO_API_KEY, "service": 924, "country": 6})
    sandbox.status(order_id.json()["order_id"])

    root = sandbox.server.root_url
    text = httpx.get(root + "/_sandbox/ledger").text + httpx.get(root + "/_sandbox/requests").text

    assert DEMO_API_KEY not in text
    assert "api_key" not in text


def test_unknown_routes_and_wrong_methods_answer_404_rest_no_route(start: StartSandbox) -> None:
    sandbox = start()

    unknown = sandbox.api.get("/nothing")
    wrong_method = sandbox.api.get("/order")

    assert error(unknown)[:2] == (404, "rest_no_route")
    assert error(wrong_method)[:2] == (404, "rest_no_route")


def test_one_kept_alive_connection_serves_many_requests(start: StartSandbox) -> None:
    sandbox = start()
    host, port = sandbox.server.root_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    sockets = []
    try:
        for _ in range(3):
            connection.request("GET", API_PREFIX + "/balance", headers={"X-API-KEY": DEMO_API_KEY})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            sockets.append(connection.sock)
    finally:
        connection.close()

    assert sockets[0] is not None
    assert sockets.count(sockets[0]) == 3


def test_the_config_reads_a_yaml_mapping_with_durations_and_a_catalog() -> None:
    data = {
        "sandbox": {
            "seed": 9,
            "api_keys": ["sk_test_a", "sk_test_b"],
            "balance": "25.5",
            "code_delay": "1-3",
            "cancel_min_age": "2m",
            "expiry": "20m",
            "never_ratio": 0.25,
            "fault_5xx": 0.1,
            "countries": [{"id": 7, "name": "Atlantis", "dial_code": "999"}],
            "services": [
                {"id": 5, "name": "Chat", "prices": {7: {"cost": 0.5, "count": 3, "rate": 80}}}
            ],
        }
    }

    config = SandboxConfig.from_mapping(data)

    assert config.seed == 9
    assert config.api_keys == ("sk_test_a", "sk_test_b")
    assert config.balance == Decimal("25.5")
    assert config.code_delay == (1.0, 3.0)
    assert (config.cancel_min_age, config.expiry) == (120.0, 1200.0)
    assert config.never_ratio == 0.25
    assert config.fault_5xx == 0.1
    assert config.services[0].offers[7].cost == Decimal("0.5")


@pytest.mark.parametrize(
    "data",
    [
        {"colour": "blue"},
        {"fault_5xx": 2},
        {"code_delay": "5-1"},
        {"api_keys": []},
        {"services": [{"id": 1, "name": "X", "prices": {99: {"cost": 1, "count": 1}}}]},
    ],
)
def test_the_config_refuses_unknown_or_impossible_settings(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SandboxConfig.from_mapping(data)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("sandbox")(sandbox_cli.sandbox_command)

    @app.command("other")
    def other() -> None:
        """Make typer keep the sub-command name, as in the real CLI."""

    return app


def test_the_cli_command_builds_its_config_from_file_and_options_and_announces_url_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[tuple[SandboxConfig, str, int]] = []

    def fake_serve_forever(
        config: SandboxConfig,
        host: str,
        port: int,
        *,
        ready: Callable[[SandboxServer], None] | None = None,
    ) -> None:
        seen.append((config, host, port))
        with SandboxServer(config, host, 0) as server:
            assert ready is not None
            ready(server)

    monkeypatch.setattr(sandbox_cli, "serve_forever", fake_serve_forever)
    config_file = tmp_path / "sandbox.yaml"
    config_file.write_text("sandbox:\n  balance: 12.50\n  rate_limit: 9\n  never_ratio: 0.1\n")
    options = ["--port", "9999", "--seed", "5", "--code-delay", "1-3", "--rate-limit", "3"]
    options += ["--fault-5xx", "0.25", "--config", str(config_file)]

    result = CliRunner().invoke(_cli(), ["sandbox", *options])

    assert result.exit_code == 0, result.output
    ((config, host, port),) = seen
    assert (host, port) == ("127.0.0.1", 9999)
    assert config.seed == 5
    assert config.balance == Decimal("12.5")
    assert config.rate_limit == 3.0
    assert config.never_ratio == 0.1
    assert config.code_delay == (1.0, 3.0)
    assert config.fault_5xx == 0.25
    assert API_PREFIX in result.output
    assert DEMO_API_KEY in result.output


def test_the_cli_refuses_a_malformed_code_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_cli, "serve_forever", lambda *a, **k: None)

    result = CliRunner().invoke(_cli(), ["sandbox", "--code-delay", "soon"])

    assert result.exit_code == 2
    assert "code-delay" in result.output
