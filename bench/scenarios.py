"""The benchmark's scenarios: the simulator's settings and the orchestrator's for each run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from orchestrator.config import Settings
from orchestrator.sandbox.config import SandboxConfig

# Tiktok in Indonesia: the simulator's deepest stock (22,000) at its lowest price ($0.12).
SERVICE_ID = 924
COUNTRY_ID = 6
MAX_PRICE = "0.50"
BALANCE = Decimal("100000.00")
ORCHESTRATOR_KEY = "sk_bench_orchestrator"
BASELINE_KEY = "sk_bench_baseline"
GROUPS = ("a", "b", "c", "d")
DEFAULT_THREADS: int = Settings.model_fields["worker_threads"].default


@dataclass(frozen=True)
class Scenario:
    """One run of the benchmark: a batch size, a provider, and how both sides are set up.

    ``poll_interval`` is both the naive script's fixed interval and the orchestrator's
    ``ORCHESTRATOR_POLL_INTERVAL``, so the two poll alike when the rate limit allows.
    """

    name: str
    group: str
    title: str
    numbers: int
    sandbox: SandboxConfig
    code_timeout: float
    poll_interval: float
    orchestrator_env: Mapping[str, str] = field(default_factory=dict)
    # Threads per worker process: the product's default unless the scenario is CPU-bound.
    threads: int = DEFAULT_THREADS
    baseline: bool = True
    # Both sides at once, each on its own simulator: only where CPU is not what is measured.
    concurrent: bool = False
    time_limit: float = 1800.0

    @property
    def rate_limit(self) -> float:
        """The provider's requests per second per key; 0 is none."""
        return self.sandbox.rate_limit

    def job_file(self) -> str:
        """The orchestrator's job file for this run."""
        return (
            f"name: bench-{self.name}\n"
            f"code_timeout: {self.code_timeout:g}s\n"
            "targets:\n"
            f"  - service: {SERVICE_ID}\n"
            f"    country: {COUNTRY_ID}\n"
            f"    quantity: {self.numbers}\n"
            f"    max_price: {MAX_PRICE}\n"
        )

    def settings(self) -> dict[str, object]:
        """What the report shows of this scenario's settings."""
        s = self.sandbox
        return {
            "numbers": self.numbers,
            "provider_rate_limit": s.rate_limit,
            "code_delay": list(s.code_delay),
            "never_ratio": s.never_ratio,
            "cancel_min_age": s.cancel_min_age,
            "provider_expiry": s.expiry,
            "code_timeout": self.code_timeout,
            "poll_interval": self.poll_interval,
            "orchestrator_env": dict(self.orchestrator_env),
            "worker_threads": self.threads,
            "concurrent_sides": self.concurrent,
        }


def _sandbox(
    *,
    seed: int,
    code_delay: tuple[float, float],
    never: float,
    rate: float,
    cancel_min_age: float,
    expiry: float,
) -> SandboxConfig:
    return SandboxConfig(
        seed=seed,
        api_keys=(ORCHESTRATOR_KEY, BASELINE_KEY),
        balance=BALANCE,
        code_delay=code_delay,
        never_ratio=never,
        rate_limit=rate,
        cancel_min_age=cancel_min_age,
        expiry=expiry,
    )


def _env(rate: float, poll: float, cancel_min_age: float, expiry: float) -> dict[str, str]:
    return {
        "ORCHESTRATOR_RATE_LIMIT": f"{rate:g}",
        "ORCHESTRATOR_POLL_INTERVAL": f"{poll:g}s",
        "ORCHESTRATOR_CANCEL_MIN_AGE": f"{cancel_min_age:g}s",
        "ORCHESTRATOR_PROVIDER_EXPIRY": f"{expiry:g}s",
    }


def throughput(numbers: int) -> Scenario:
    """(a) No rate limit, codes within a second: what the machinery costs per number."""
    return Scenario(
        name=f"a-{numbers}",
        group="a",
        title=f"(a) no rate limit, {numbers} numbers, codes after 0.2-1 s, 5% never",
        numbers=numbers,
        sandbox=_sandbox(
            seed=101, code_delay=(0.2, 1.0), never=0.05, rate=0, cancel_min_age=2, expiry=300
        ),
        code_timeout=5.0,
        poll_interval=0.5,
        orchestrator_env=_env(rate=0, poll=0.5, cancel_min_age=2, expiry=300),
        # A simulator that answers in well under a millisecond makes every worker CPU-bound:
        # a second thread in a process only contends for the GIL (README, Performance).
        threads=1,
        time_limit=900,
    )


def rate_limited(numbers: int, *, quick: bool) -> Scenario:
    """(b) The provider's real constraint: 5 requests per second per key."""
    delay, min_age, timeout = ((2.0, 15.0), 10.0, 30.0) if quick else ((5.0, 60.0), 30.0, 120.0)
    return _under_limit(
        numbers, "b", 5, seed=202, delay=delay, min_age=min_age, timeout=timeout, time_limit=1800
    )


def real_limit(numbers: int, *, quick: bool) -> Scenario:
    """(d) The provider's real limit, 0.5 requests/s: every call costs two seconds of wall time."""
    delay, min_age, timeout = ((2.0, 15.0), 30.0, 60.0) if quick else ((5.0, 60.0), 120.0, 300.0)
    return _under_limit(
        numbers, "d", 0.5, seed=404, delay=delay, min_age=min_age, timeout=timeout, time_limit=2400
    )


def _under_limit(
    numbers: int,
    group: str,
    rate: float,
    *,
    seed: int,
    delay: tuple[float, float],
    min_age: float,
    timeout: float,
    time_limit: float,
) -> Scenario:
    """A batch under the provider's ``rate`` limit: 20% of codes never come, poll every 5 s."""
    return Scenario(
        name=f"{group}-{numbers}",
        group=group,
        title=(
            f"({group}) {rate:g} requests/s, {numbers} numbers, codes after "
            f"{delay[0]:g}-{delay[1]:g} s, 20% never, cancel allowed after {min_age:g} s, "
            f"code_timeout {timeout:g} s"
        ),
        numbers=numbers,
        sandbox=_sandbox(
            seed=seed, code_delay=delay, never=0.2, rate=rate, cancel_min_age=min_age, expiry=1200
        ),
        code_timeout=timeout,
        poll_interval=5.0,
        # Just under the provider's limit: network jitter must never turn into a 429.
        orchestrator_env=_env(rate=rate * 0.96, poll=5.0, cancel_min_age=min_age, expiry=1200),
        concurrent=True,
        time_limit=time_limit,
    )


def in_flight(numbers: int, *, quick: bool) -> Scenario:
    """(c) Many numbers waiting at once: memory and CPU per number must not grow with them."""
    delay, timeout, poll = ((20.0, 40.0), 60.0, 10.0) if quick else ((90.0, 180.0), 240.0, 60.0)
    return Scenario(
        name=f"c-{numbers}",
        group="c",
        title=(
            f"(c) {numbers} numbers in flight, no rate limit, codes after "
            f"{delay[0]:g}-{delay[1]:g} s, 5% never, polled every {poll:g} s"
        ),
        numbers=numbers,
        sandbox=_sandbox(
            seed=303, code_delay=delay, never=0.05, rate=0, cancel_min_age=timeout, expiry=1200
        ),
        code_timeout=timeout,
        poll_interval=poll,
        orchestrator_env=_env(rate=0, poll=poll, cancel_min_age=timeout, expiry=1200),
        baseline=False,
        time_limit=2400,
    )


def scenarios(group: str, *, quick: bool, numbers: int | None = None) -> list[Scenario]:
    """The runs of one group ("a"-"d"), full size or ``quick``, or of ``numbers``."""
    if group == "a":
        return [throughput(numbers or (200 if quick else 2000))]
    if group == "b":
        return [rate_limited(numbers or (40 if quick else 200), quick=quick)]
    if group == "d":
        return [real_limit(numbers or (12 if quick else 40), quick=quick)]
    if group == "c":
        sizes = (numbers,) if numbers else (500, 1000) if quick else (1000, 10000)
        return [in_flight(n, quick=quick) for n in sizes]
    raise ValueError(f"unknown scenario {group!r}; known: {', '.join(GROUPS)}")
