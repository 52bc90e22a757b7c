"""The sandbox's settings: countries, services and the knobs for delays, limits and faults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from typing import Any

from orchestrator.durations import parse_duration
from orchestrator.errors import ConfigError

DEMO_API_KEY = "sk_test_sandbox"


@dataclass(frozen=True)
class SandboxCountry:
    """A country the sandbox sells numbers in; ``dial_code`` starts every phone number."""

    id: int
    name: str
    dial_code: str


@dataclass(frozen=True)
class SandboxOffer:
    """Price, starting stock and advertised success rate (percent) of one service in one country;
    ``delivers``: the percent of orders whose code really comes (None: as advertised), so a
    country can advertise one rate and deliver another."""

    cost: Decimal
    count: int
    rate: int
    delivers: int | None = None

    @property
    def never_ratio(self) -> float:
        """The chance that an order's code never comes."""
        return 1 - (self.rate if self.delivers is None else self.delivers) / 100


@dataclass(frozen=True)
class SandboxService:
    """A service with its offers, keyed by country id."""

    id: int
    name: str
    offers: Mapping[int, SandboxOffer]


DEFAULT_COUNTRIES = (
    SandboxCountry(1, "United States", "1"),
    SandboxCountry(16, "United Kingdom", "44"),
    SandboxCountry(36, "Canada", "1"),
    SandboxCountry(43, "Germany", "49"),
    SandboxCountry(6, "Indonesia", "62"),
    SandboxCountry(22, "India", "91"),
)

_DEFAULT_TABLE: tuple[tuple[int, str, dict[int, tuple[str, int, int]]], ...] = (
    # UK Facebook is sold out on purpose, so demos meet a count of 0.
    (1010, "Facebook", {1: ("0.55", 6400, 70), 16: ("0.50", 0, 68), 22: ("0.15", 21000, 60)}),
    (1005, "Google", {1: ("0.90", 5120, 78), 16: ("0.85", 2050, 75), 36: ("0.95", 420, 74)}),
    (1003, "Telegram", {1: ("1.80", 2210, 64), 16: ("1.55", 980, 67), 43: ("1.90", 150, 69)}),
    (924, "Tiktok/Douyin", {1: ("0.35", 9120, 72), 16: ("0.30", 4410, 70), 6: ("0.12", 22000, 66)}),
    (1012, "Whatsapp", {1: ("2.66", 3868, 56), 16: ("1.95", 1204, 61), 22: ("0.48", 15230, 44)}),
)

DEFAULT_SERVICES = tuple(
    SandboxService(sid, name, {c: SandboxOffer(Decimal(p), n, r) for c, (p, n, r) in rows.items()})
    for sid, name, rows in _DEFAULT_TABLE
)

_PROBABILITIES = ("fault_5xx", "fault_429", "fault_slow", "fault_non_json", "fault_drop_order")


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves; every field has a default that reads like the real provider.

    ``never_ratio`` None means each order misses its code with its offer's ``never_ratio``
    (from ``delivers``, or else the advertised ``rate``). Faults are probabilities
    per API request.
    """

    seed: int = 0
    api_keys: tuple[str, ...] = (DEMO_API_KEY,)
    balance: Decimal = Decimal("1000.00")
    countries: tuple[SandboxCountry, ...] = DEFAULT_COUNTRIES
    services: tuple[SandboxService, ...] = DEFAULT_SERVICES
    code_delay: tuple[float, float] = (2.0, 20.0)
    never_ratio: float | None = None
    rate_limit: float = 0.0
    cancel_min_age: float = 120.0
    expiry: float = 1200.0
    fault_5xx: float = 0.0
    fault_429: float = 0.0
    fault_slow: float = 0.0
    fault_non_json: float = 0.0
    fault_drop_order: float = 0.0
    slow_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not self.api_keys or not all(self.api_keys):
            raise ConfigError("sandbox: api_keys must hold at least one non-empty key")
        low, high = self.code_delay
        if not 0 <= low <= high:
            raise ConfigError(f"sandbox: code_delay must be 0 <= min <= max, got {low}-{high}")
        for name in (*_PROBABILITIES, "never_ratio"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ConfigError(f"sandbox: {name} must be between 0 and 1, got {value}")
        known = {country.id for country in self.countries}
        for service in self.services:
            if unknown := set(service.offers) - known:
                raise ConfigError(f"sandbox: service {service.id} sells in unknown {unknown}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SandboxConfig:
        """Build from a YAML/JSON mapping; a ``sandbox:`` section is used if there is one."""
        if isinstance(data.get("sandbox"), Mapping):
            data = data["sandbox"]
        names = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - names):
            raise ConfigError(f"sandbox: unknown settings {', '.join(map(str, unknown))}")
        try:
            values: dict[str, Any] = {k: _convert(k, v) for k, v in data.items()}
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise ConfigError(f"sandbox: {exc}") from exc
        return cls(**values)


def parse_code_delay(value: Any) -> tuple[float, float]:
    """Read a code delay written as "MIN-MAX", [MIN, MAX] or one number of seconds."""
    if isinstance(value, str):
        parts: list[Any] = [part.strip() for part in value.split("-")]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        parts = [value]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise ValueError(f"code_delay must be MIN-MAX seconds, got {value!r}")
    return parse_duration(parts[0]), parse_duration(parts[1])


def _convert(name: str, value: Any) -> Any:
    if name == "balance":
        return Decimal(str(value))
    if name == "api_keys":
        return (value,) if isinstance(value, str) else tuple(str(key) for key in value)
    if name == "code_delay":
        return parse_code_delay(value)
    if name in ("cancel_min_age", "expiry", "slow_seconds"):
        return parse_duration(value)
    if name == "countries":
        return tuple(
            SandboxCountry(int(c["id"]), str(c["name"]), str(c["dial_code"])) for c in value
        )
    if name == "services":
        return tuple(
            SandboxService(
                int(s["id"]),
                str(s["name"]),
                {
                    int(cid): SandboxOffer(
                        Decimal(str(o["cost"])),
                        int(o["count"]),
                        int(o.get("rate", 100)),
                        None if o.get("delivers") is None else int(o["delivers"]),
                    )
                    for cid, o in (s.get("prices") or {}).items()
                },
            )
            for s in value
        )
    if name == "seed":
        return int(value)
    return None if value is None else float(value)
