"""How a job file's names become provider ids: the resolved job, and the resolution of its
service and country names or ids against the provider's catalogue."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from orchestrator.jobs.spec import JobSpec, spec_error
from orchestrator.provider.types import Catalog, Price, Service
from orchestrator.redact import for_terminal


@dataclass(frozen=True)
class ResolvedTarget:
    """A target with its service and countries as the provider knows them."""

    index: int
    service_id: int
    service_name: str
    countries: list[tuple[int, str]]
    quantity: int  # numbers to buy; for a codes target, the most it may buy (max_numbers)
    max_price: Decimal
    codes: int | None = None  # codes to get: buy until they came (None: buy quantity numbers)
    # The service's live prices when resolved: the first numbers of a codes target follow them.
    prices: Mapping[int, Price] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedJob:
    """A job ready to plan: every name replaced by the provider's id, durations in seconds."""

    name: str
    budget: Decimal | None
    code_timeout: float
    schedule: str | None
    targets: list[ResolvedTarget]


def resolve_job(spec: JobSpec, catalog: Catalog, path: str) -> ResolvedJob:
    """Replace service and country names or ids by what the provider lists, checking each.

    Calls ``catalog.services()`` once and ``catalog.prices()`` once per distinct service.
    Every unknown service or country is reported in one ``SpecError`` (as in
    ``load_job_spec``), with close matches suggested. Provider failures propagate as-is.
    """
    services = catalog.services()
    prices_by_service: dict[int, dict[int, Price]] = {}
    problems: list[tuple[str, str]] = []
    targets: list[ResolvedTarget] = []
    for index, target in enumerate(spec.targets):
        where = f"targets[{index}]"
        try:
            service = _find_service(target.service, services)
        except ValueError as exc:
            problems.append((f"{where}.service", str(exc)))
            continue
        if service.id not in prices_by_service:
            prices_by_service[service.id] = catalog.prices(service.id)
        prices = prices_by_service[service.id]
        if target.country is not None:
            fields = [(f"{where}.country", target.country)]
        elif target.any_country:
            fields = [(f"{where}.exclude[{i}]", ref) for i, ref in enumerate(target.exclude or [])]
        else:
            fields = [(f"{where}.countries[{i}]", ref) for i, ref in enumerate(target.country_refs)]
        countries: list[tuple[int, str]] = []
        for field, ref in fields:
            try:
                country = _find_country(ref, service, prices)
            except ValueError as exc:
                problems.append((field, str(exc)))
                continue
            if country in countries:
                problems.append((field, f"lists {country[1]} ({country[0]}) a second time"))
                continue
            countries.append(country)
        if target.any_country:
            # Every country listed now but those excluded, in the provider's order: the
            # planner ranks them by cost per code at each purchase.
            excluded = set(countries)
            countries = [
                (p.country_id, p.country)
                for p in prices.values()
                if (p.country_id, p.country) not in excluded
            ]
            if not countries:
                problems.append((f"{where}.exclude", "leaves no country to buy in"))
        targets.append(
            ResolvedTarget(
                index=index,
                service_id=service.id,
                service_name=service.name,
                countries=countries,
                quantity=target.numbers_at_most,
                max_price=target.max_price,
                codes=target.codes,
                prices=prices,
            )
        )
    if problems:
        raise spec_error(path, problems)
    return ResolvedJob(
        name=spec.name,
        budget=spec.budget,
        code_timeout=spec.code_timeout,
        schedule=spec.schedule,
        targets=targets,
    )


def _find_service(ref: int | str, services: list[Service]) -> Service:
    if isinstance(ref, int):
        for service in services:
            if service.id == ref:
                return service
        known = [(service.id, service.name) for service in services]
        raise ValueError(f"no service has id {ref}{_listed(known, 'services')}")
    matches = [service for service in services if service.name.casefold() == ref.casefold()]
    if len(matches) > 1:
        ids = ", ".join(str(service.id) for service in matches)
        raise ValueError(f"{ref!r} names several services ({ids}); give the id instead")
    if not matches:
        known = [(service.id, service.name) for service in services]
        raise ValueError(f"unknown service {ref!r}{_suggestion(ref, known, 'services')}")
    return matches[0]


def _find_country(ref: int | str, service: Service, prices: dict[int, Price]) -> tuple[int, str]:
    offered = sorted((price.country_id, price.country) for price in prices.values())
    where = f"{for_terminal(service.name)} ({service.id})"
    if isinstance(ref, int):
        for country_id, name in offered:
            if country_id == ref:
                return country_id, name
        raise ValueError(f"no country has id {ref} for {where}{_listed(offered, 'countries')}")
    for country_id, name in offered:
        if name.casefold() == ref.casefold():
            return country_id, name
    hint = _suggestion(ref, offered, "countries")
    raise ValueError(f"unknown country {ref!r} for {where}{hint}")


def _suggestion(text: str, known: list[tuple[int, str]], noun: str) -> str:
    """Say which known names look like ``text``: close spellings, then names containing it."""
    folded = {name.casefold(): (id_, name) for id_, name in known}
    close = difflib.get_close_matches(text.casefold(), list(folded), n=3, cutoff=0.6)
    # "tiktok" should find "Tiktok/Douyin" even when the spelling ratio is low.
    close += [name for name in folded if text.casefold() in name and name not in close]
    if not close:
        return _listed(known, noun)
    options = " or ".join(f"{folded[name][1]!r} ({folded[name][0]})" for name in close[:3])
    return f"; did you mean {options}?"


def _listed(known: list[tuple[int, str]], noun: str) -> str:
    """Show a short list whole; of a long one (the real provider's), only its size."""
    if len(known) > 5:
        return f"; the provider lists {len(known)} {noun}"
    # The names are the provider's: a line break in one must not start a line of its own.
    listed = ", ".join(f"{for_terminal(n)} ({i})" for i, n in known)
    return "; the provider lists " + (listed or f"no {noun}")
