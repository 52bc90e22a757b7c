"""Live prices: an order's answer is a read of its country's price, so a batch bought in one
country reads ``/prices`` once, however long it takes, and no price used is older than the TTL."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from orchestrator.lifecycle.live_prices import PriceCache
from orchestrator.lifecycle.planner import NoChoice, choose_country
from orchestrator.lifecycle.purchase import place
from orchestrator.provider.types import Price
from orchestrator.sandbox.config import SandboxConfig
from tests.inprocess import inprocess_runtime, plan_job

TTL = 0.4
TELEGRAM, UK, US = 1003, 16, 1
PROVIDER = SandboxConfig(seed=3, code_delay=(30.0, 30.0), never_ratio=0.0)


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LEGITSMS_API_KEY", "LEGITSMS_BASE_URL", "REDIS_URL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_a_batch_bought_in_one_country_reads_its_prices_once(tmp_path: Path) -> None:
    with inprocess_runtime(tmp_path, PROVIDER, price_cache_ttl=TTL) as (rt, simulator, _):
        ids = plan_job(rt.engine, quantity=6)
        began = time.monotonic()
        for slot in ids[:5]:
            place(rt, slot)
            time.sleep(TTL * 0.6)  # each order within the TTL of the one before
        assert time.monotonic() - began > 2 * TTL  # the first read is long past its TTL
        requests = simulator.ledger.snapshot(0)["requests"]
        assert requests["POST /order"] == 5
        assert requests["GET /prices"] == 1

        time.sleep(TTL)  # no order for a TTL: the price is no longer live
        place(rt, ids[5])
        assert simulator.ledger.snapshot(0)["requests"]["GET /prices"] == 2


class Listed:
    """``GET /prices`` as a function: UK and US Telegram at fixed prices, reads counted."""

    def __init__(self) -> None:
        self.reads = 0

    def __call__(self, service_id: int) -> dict[int, Price]:
        self.reads += 1
        return {
            UK: Price(UK, "United Kingdom", Decimal("1.00"), 50, 90),
            US: Price(US, "United States", Decimal("1.20"), 50, 90),
        }


def test_a_country_not_bought_in_within_the_ttl_is_read_again() -> None:
    listed = Listed()
    prices = PriceCache(listed, TTL)
    prices.for_countries(TELEGRAM, [UK, US])
    prices.bought(TELEGRAM, UK, Decimal("1.00"))
    time.sleep(TTL + 0.05)
    prices.bought(TELEGRAM, UK, Decimal("1.00"))
    assert prices.fresh_for(TELEGRAM, [UK])  # a choice of the UK alone needs no read
    assert not prices.fresh_for(TELEGRAM, [UK, US])  # the US price is a TTL old
    prices.for_countries(TELEGRAM, [UK, US])
    assert listed.reads == 2


def test_a_price_rise_an_order_answers_with_stops_the_next_purchase_at_once() -> None:
    listed = Listed()
    prices = PriceCache(listed, 3600)
    assert prices.for_countries(TELEGRAM, [UK])[UK].cost == Decimal("1.00")
    prices.bought(TELEGRAM, UK, Decimal("2.50"))  # charged more than the list said
    seen = prices.for_countries(TELEGRAM, [UK])
    assert seen[UK].cost == Decimal("2.50") and seen[US].cost == Decimal("1.20")
    choice = choose_country([(UK, "United Kingdom")], seen, Decimal("2.00"))
    assert isinstance(choice, NoChoice) and choice.reason == "price_above_cap"
    assert listed.reads == 1


def test_a_read_after_an_order_wins_over_its_cost() -> None:
    listed = Listed()
    prices = PriceCache(listed, TTL)
    prices.for_countries(TELEGRAM, [UK])
    prices.bought(TELEGRAM, UK, Decimal("2.50"))
    time.sleep(TTL + 0.05)  # the order's cost ages out with the read before it
    assert prices.for_countries(TELEGRAM, [UK])[UK].cost == Decimal("1.00")
    assert listed.reads == 2


def test_a_country_out_of_stock_is_read_again_before_it_is_bought() -> None:
    listed = Listed()
    prices = PriceCache(listed, 3600)
    prices.for_countries(TELEGRAM, [UK])
    prices.bought(TELEGRAM, UK, Decimal("1.00"))
    prices.mark_out_of_stock(TELEGRAM, UK)
    assert prices.for_countries(TELEGRAM, [UK])[UK].count == 0  # until the read's TTL ends
    assert listed.reads == 1
