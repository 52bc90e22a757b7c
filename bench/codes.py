"""Scenario (e), codes: N codes over countries whose true success rates differ from the
advertised ones, got three ways on the same simulator settings.

- ``codes``: the product with a ``codes: N`` target over every country (``countries: any``):
  it starts where price / advertised rate is lowest and learns each country's rate as it goes.
- ``quantity, rerun``: the user's way without ``codes:``: a ``quantity: N`` job in the one
  country a user would pick (lowest price / advertised rate), then a new job of quantity =
  shortfall, again and again, until N codes came.
- ``oracle``: the product with ``codes: N`` and only the truly best country listed (lowest
  price / true rate). The oracle keeps the simulator's settings as they are (advertising the
  true rates instead would change what the other two meet), and it is what a user who knew
  the true rates would write.

Each way runs on a simulator of its own with the same seed (the n-th order of each draws the
same chance of its code coming, so a country's true rate falls alike on all three), with its
own Redis and database and real workers (``orchestrated.py``). The three run side by side:
they wait on the provider and use little CPU.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from bench.infra import database_for_run, redis_for_run
from bench.metrics import Observed
from bench.orchestrated import Deployment, NextJob, run_orchestrator
from bench.processes import Environment
from bench.report import target
from bench.scenarios import BALANCE, ORCHESTRATOR_KEY, Scenario, _env
from orchestrator.sandbox.config import (
    DEFAULT_COUNTRIES,
    SandboxConfig,
    SandboxOffer,
    SandboxService,
)
from orchestrator.sandbox.ledger import Ledger, OrderState
from orchestrator.sandbox.server import SandboxServer

SERVICE_ID = 924
MAX_PRICE = "1.00"
STOCK = 5000
# Country id -> (price, advertised rate %, true rate %). Price / advertised rate ranks
# Indonesia first (0.118 per code) and the US last; price / true rate ranks the UK first
# (0.333), then India (0.375), Germany (0.46), Indonesia and the US (0.50).
OFFERS: dict[int, tuple[str, int, int]] = {
    6: ("0.10", 85, 20),  # Indonesia: cheap, advertises 85%, delivers 20%
    22: ("0.15", 70, 40),  # India: cheap, over-advertised
    16: ("0.20", 60, 60),  # United Kingdom: mid-priced and honest, truly the best
    43: ("0.30", 75, 65),  # Germany: a little over-advertised
    1: ("0.45", 90, 90),  # United States: expensive and honest
}
USER_PICK = 6  # lowest price / advertised rate: where a user without codes: buys
TRUE_BEST = 16  # lowest price / true rate: the oracle's one country

WAYS = ("codes", "quantity, rerun", "oracle")
# The two ways the product is measured against run without the circuit breaker: the user's
# way of today had none, and with one a single-country job whose country ran 5 misses in a
# row (likely at Indonesia's 20%, possible at the United Kingdom's 60%) waits out its 30 min
# cool-down, which would flatter *codes* by the comparison, not by what it does.
NO_BREAKER = {"ORCHESTRATOR_BREAKER_COOLDOWN": "0"}


@dataclass(frozen=True)
class CodesScenario:
    """Scenario (e): the simulator, the codes wanted and the orchestrator's settings."""

    name: str
    title: str
    codes: int
    base: Scenario  # the simulator and orchestrator settings shared by the three ways

    def job(self, way: str, wanted: int) -> str:
        """The job file of one way, for ``wanted`` codes (or numbers, for the rerun way)."""
        head = f"name: bench-{self.name}\ncode_timeout: {self.base.code_timeout:g}s\ntargets:\n"
        if way == "codes":
            where, count = "countries: any", f"codes: {wanted}"
        elif way == "oracle":
            where, count = f"countries: [{TRUE_BEST}]", f"codes: {wanted}"
        else:
            where, count = f"country: {USER_PICK}", f"quantity: {wanted}"
        return (
            f"{head}  - service: {SERVICE_ID}\n    {where}\n    {count}\n"
            f"    max_price: {MAX_PRICE}\n"
        )

    def next_job(self, way: str) -> NextJob:
        """The jobs of one way in turn: one codes job, or quantity jobs until the codes came."""
        submitted: list[int] = []

        def next_job(codes: int) -> str | None:
            if way != "quantity, rerun":
                if submitted:
                    return None
                submitted.append(self.codes)
                return self.job(way, self.codes)
            if codes >= self.codes:
                return None
            submitted.append(self.codes - codes)
            return self.job(way, self.codes - codes)

        return next_job

    def settings(self) -> dict[str, object]:
        s = self.base.sandbox
        return {
            "codes": self.codes,
            "offers": {
                str(c): {"price": p, "advertised": a, "delivers": d}
                for c, (p, a, d) in OFFERS.items()
            },
            "user_pick": USER_PICK,
            "true_best": TRUE_BEST,
            "provider_rate_limit": s.rate_limit,
            "code_delay": list(s.code_delay),
            "cancel_min_age": s.cancel_min_age,
            "code_timeout": self.base.code_timeout,
            "poll_interval": self.base.poll_interval,
            "orchestrator_env": dict(self.base.orchestrator_env),
            "without_breaker": [way for way in WAYS if way != "codes"],
        }

    def way_base(self, way: str) -> Scenario:
        """The settings one way runs with: ``codes`` the scenario's, the others without the
        circuit breaker (``NO_BREAKER``)."""
        if way == "codes":
            return self.base
        return replace(self.base, orchestrator_env={**self.base.orchestrator_env, **NO_BREAKER})


def codes_scenario(*, quick: bool, codes: int | None = None) -> CodesScenario:
    """(e) at full size (20 codes) or ``quick`` (10)."""
    wanted = codes or (10 if quick else 20)
    rate, delay, min_age, timeout, poll = 3.0, (2.0, 12.0), 10.0, 15.0, 3.0
    service = SandboxService(
        SERVICE_ID,
        "Tiktok/Douyin",
        {
            c: SandboxOffer(Decimal(p), STOCK, advertised, delivers)
            for c, (p, advertised, delivers) in OFFERS.items()
        },
    )
    sandbox = SandboxConfig(
        seed=505,
        api_keys=(ORCHESTRATOR_KEY,),
        balance=BALANCE,
        countries=DEFAULT_COUNTRIES,
        services=(service,),
        code_delay=delay,
        never_ratio=None,  # each country's own true rate
        rate_limit=rate,
        cancel_min_age=min_age,
        expiry=1200,
    )
    title = (
        f"(e) {wanted} codes over 5 countries whose true rates differ from the advertised, "
        f"{rate:g} requests/s, codes after {delay[0]:g}-{delay[1]:g} s, cancel allowed after "
        f"{min_age:g} s, code_timeout {timeout:g} s"
    )
    base = Scenario(
        name=f"e-{wanted}",
        group="e",
        title=title,
        numbers=wanted,
        sandbox=sandbox,
        code_timeout=timeout,
        poll_interval=poll,
        # Just under the provider's limit, as in (b).
        orchestrator_env=_env(rate=rate * 0.96, poll=poll, cancel_min_age=min_age, expiry=1200),
        baseline=False,
        concurrent=True,
        time_limit=1200,
    )
    return CodesScenario(name=base.name, title=title, codes=wanted, base=base)


def run_codes(scenario: CodesScenario, opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    """The three ways side by side, each on its own simulator; the figures of each."""
    folder = root / scenario.name
    with ExitStack() as stack:
        servers = [stack.enter_context(SandboxServer(scenario.base.sandbox)) for _ in WAYS]
        jobs: list[Callable[[], dict[str, Any]]] = [
            partial(_way, scenario, way, opts, server, folder)
            for way, server in zip(WAYS, servers, strict=True)
        ]
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = [future.result() for future in [pool.submit(job) for job in jobs]]
    result: dict[str, Any] = {
        "name": scenario.name,
        "group": "e",
        "title": scenario.title,
        "settings": scenario.settings(),
        "sides": dict(zip(WAYS, results, strict=True)),
    }
    result["targets"] = codes_targets(result)
    return result


def _way(
    scenario: CodesScenario,
    way: str,
    opts: argparse.Namespace,
    server: SandboxServer,
    root: Path,
) -> dict[str, Any]:
    folder = root / way.replace(", ", "-")
    with (
        redis_for_run(folder / "redis", None) as redis_url,
        database_for_run(folder, opts.postgres) as database_url,
    ):
        deployment = Deployment(
            redis_url=redis_url,
            database_url=database_url,
            workers=opts.workers,
            threads=opts.threads or scenario.base.threads,
            log_level=opts.log_level,
        )
        environment = Environment()
        observed = run_orchestrator(
            scenario.way_base(way),
            deployment,
            base_url=server.url,
            workdir=folder,
            next_job=scenario.next_job(way),
        )
    return {
        **cost_figures(observed, server.ledger, scenario.codes),
        "side": way,
        "environment": environment.report(),
    }


def cost_figures(observed: Observed, ledger: Ledger, wanted: int) -> dict[str, Any]:
    """Numbers, money and time per code, from the simulator's ledger and what was stored."""
    orders = ledger.orders()
    now = max(observed.finished_at, observed.started_at)
    charged = sum((o.cost for o in orders), Decimal(0))
    refunded = sum((o.cost for o in orders if o.refunded), Decimal(0))
    codes = len(observed.codes)
    stored = sorted(observed.stored_at.values())
    by_country: dict[str, dict[str, int]] = {}
    for order in orders:
        seen = by_country.setdefault(str(order.country_id), {"bought": 0, "received": 0})
        seen["bought"] += 1
        seen["received"] += order.state(now) is OrderState.RECEIVED
    requests = ledger.requests()
    return {
        "codes_wanted": wanted,
        "codes": codes,
        "numbers": len(orders),
        "numbers_per_code": len(orders) / codes if codes else None,
        "charged": float(charged),
        "refunded": float(refunded),
        "net_spend": float(charged - refunded),
        "net_spend_per_code": float(charged - refunded) / codes if codes else None,
        # From launching the first submit to the moment the wanted-th code was stored.
        "seconds_to_codes": stored[wanted - 1] - observed.started_at
        if len(stored) >= wanted
        else None,
        "seconds_to_end": observed.finished_at - observed.started_at,
        "jobs": len(observed.notes.get("rounds", [])),
        "api_calls": len(requests),
        "rate_limited": sum(1 for _at, _endpoint, status in requests if status == 429),
        "by_country": by_country,
        "notes": observed.notes,
    }


def codes_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: (i) within 15% of the oracle, 25% below the rerun, no dearer."""
    sides = result["sides"]
    mine, rerun, oracle = (sides[way] for way in WAYS)
    found: list[dict[str, Any]] = []
    for key, label in (("numbers_per_code", "numbers per code"), ("seconds_to_codes", "wall time")):
        a, b, c = mine[key], rerun[key], oracle[key]
        unit = " s" if key == "seconds_to_codes" else ""
        if a is None or c is None:
            found.append(target(f"{label} within 15% of the oracle's", False, "codes not all got"))
        else:
            found.append(
                target(
                    f"{label} within 15% of the oracle's",
                    a <= 1.15 * c,
                    f"{a:.2f}{unit} vs {c:.2f}{unit} ({a / c:.2f}x)",
                )
            )
        if a is None or b is None:
            found.append(target(f"{label} 25% below the rerun's", False, "codes not all got"))
        else:
            found.append(
                target(
                    f"{label} at least 25% below the rerun's",
                    a <= 0.75 * b,
                    f"{a:.2f}{unit} vs {b:.2f}{unit} ({a / b:.2f}x)",
                )
            )
    a, b = mine["net_spend_per_code"], rerun["net_spend_per_code"]
    found.append(
        target(
            "net spend per code no higher than the rerun's",
            a is not None and b is not None and a <= b,
            "codes not all got" if a is None or b is None else f"${a:.3f} vs ${b:.3f}",
        )
    )
    return found
