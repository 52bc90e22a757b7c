"""``plan``: what a job file would buy and cost, without buying (the figures: jobs/plan.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from orchestrator.cli.common import (
    broker_url,
    check_job_file,
    client_for,
    context,
    guard,
    out,
    plain,
    terminated_as_interrupt,
)
from orchestrator.cli.output import JSON_HELP, json_money, print_json
from orchestrator.jobs.plan import JobForecast, TargetForecast, plan_job_file
from orchestrator.money import shown
from orchestrator.redact import for_terminal


def plan(
    ctx: typer.Context,
    job_file: Annotated[Path, typer.Argument(help="The job's YAML file.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_HELP)] = False,
) -> None:
    """Show what a job would buy, where and at what cost; buys nothing.

    Per target: the allowed countries ranked by cost per expected code (price / estimated
    success rate), those passed over and why, the numbers and spend to reach the target
    (median and 90th percentile), and whether the budget suffices.
    """
    with terminated_as_interrupt(), guard():
        settings = context(ctx).settings()
        check_job_file(settings, job_file)
        with broker_url(settings) as url:
            forecast = plan_job_file(
                settings, job_file, open_client=lambda: client_for(settings, url)
            )
    if as_json:
        print_json(forecast_json(forecast), out)
    elif out.is_terminal:
        _print_tables(forecast)
    else:
        for line in forecast_lines(forecast):
            plain(out, line)


def _rate(rate: float) -> float:
    return round(rate, 4)


def forecast_json(forecast: JobForecast) -> dict[str, Any]:
    """The ``--json`` document (README: Commands)."""
    return {
        "job": forecast.name,
        "budget": json_money(forecast.budget),
        "budget_needed": shown(forecast.budget_needed),
        "budget_suffices": forecast.budget_suffices,
        "spend": {"median": shown(forecast.spend_median), "p90": shown(forecast.spend_p90)},
        "targets": [_target_json(target) for target in forecast.targets],
    }


def _target_json(target: TargetForecast) -> dict[str, Any]:
    return {
        "target": target.index,
        "service": {"id": target.service_id, "name": target.service_name},
        "kind": target.kind,
        "wanted": target.wanted,
        "max_numbers": target.max_numbers,
        "max_price": shown(target.max_price),
        "countries": [
            {
                "id": c.country_id,
                "name": c.name,
                "price": shown(c.price),
                "stock": c.stock,
                "advertised_rate": _rate(c.advertised_rate),
                "estimated_rate": _rate(c.estimated_rate),
                "cost_per_code": shown(c.cost_per_code),
            }
            for c in target.countries
        ],
        "passed_over": [{"name": name, "reason": why} for name, why in target.passed_over],
        "country": target.country.country_id if target.country else None,
        "numbers": {"median": target.numbers_median, "p90": target.numbers_p90},
        "codes": {"median": target.codes_median, "p10": target.codes_p10},
        "max_numbers_chance": (
            None if target.max_numbers_chance is None else round(target.max_numbers_chance, 4)
        ),
        "spend": {"median": shown(target.spend_median), "p90": shown(target.spend_p90)},
        "reserve": shown(target.reserve),
    }


def _percent(rate: float) -> str:
    if 0.999 <= rate < 1.0:  # never round a chance short of certain up to 100%
        return ">99.9%"
    return f"{rate * 100:.1f}%"


def _heading(target: TargetForecast) -> str:
    what = (
        f"{target.wanted} codes, at most {target.max_numbers} numbers"
        if target.kind == "codes"
        else f"{target.wanted} numbers"
    )
    return (
        f"target {target.index}: {target.service_name} ({target.service_id}), {what}, "
        f"cap {shown(target.max_price)}"
    )


def _figures(target: TargetForecast) -> list[str]:
    first = target.country
    if first is None:
        return ["no allowed country can be bought now: the target would fail"]
    where = f"in {first.name}"
    if target.kind == "codes":
        chance = target.max_numbers_chance or 0.0
        return [
            f"{where}: numbers to buy {target.numbers_median} (median), "
            f"{target.numbers_p90} (p90); {target.max_numbers} numbers (max_numbers) "
            f"suffice with probability {_percent(chance)}",
            f"spend {shown(target.spend_median)} (code-less numbers are refunded); "
            f"reserves up to {shown(target.reserve)} of the budget",
        ]
    return [
        f"{where}: codes {target.codes_median} (median), {target.codes_p10} (p10) "
        f"of {target.wanted} numbers",
        f"spend {shown(target.spend_median)} (median), {shown(target.spend_p90)} (p90); "
        f"reserves up to {shown(target.reserve)} of the budget (every number at its cap)",
    ]


def _budget_line(forecast: JobForecast) -> str:
    spend = (
        f"spend {shown(forecast.spend_median)} (median), {shown(forecast.spend_p90)} (p90); "
        f"reserves up to {shown(forecast.budget_needed)}"
    )
    if forecast.budget is None:
        return f"job {forecast.name}: {spend}; no budget"
    verdict = "suffices" if forecast.budget_suffices else "does NOT suffice"
    return f"job {forecast.name}: {spend}; budget {shown(forecast.budget)} {verdict}"


def forecast_lines(forecast: JobForecast) -> list[str]:
    """The plan as plain lines (off a terminal): grep- and cron-friendly."""
    lines: list[str] = []
    for target in forecast.targets:
        lines.append(_heading(target))
        for rank, c in enumerate(target.countries, start=1):
            lines.append(
                f"  {rank}. {c.name} ({c.country_id}): price {shown(c.price)}, stock {c.stock}, "
                f"advertised {_percent(c.advertised_rate)}, estimated "
                f"{_percent(c.estimated_rate)}, {shown(c.cost_per_code)} per code"
            )
        for name, why in target.passed_over:
            lines.append(f"  passed over: {name}: {why}")
        lines += [f"  {line}" for line in _figures(target)]
    lines.append(_budget_line(forecast))
    return lines


def _print_tables(forecast: JobForecast) -> None:
    for target in forecast.targets:
        table = Table(
            "#",
            "country",
            "price",
            "stock",
            "advertised",
            "estimated",
            "per code",
            title=Text(for_terminal(_heading(target))),
            title_justify="left",
        )
        for rank, c in enumerate(target.countries, start=1):
            table.add_row(
                str(rank),
                Text(for_terminal(f"{c.name} ({c.country_id})")),
                shown(c.price),
                str(c.stock),
                _percent(c.advertised_rate),
                _percent(c.estimated_rate),
                shown(c.cost_per_code),
            )
        out.print(table)
        for name, why in target.passed_over:
            plain(out, f"  passed over: {name}: {why}")
        for line in _figures(target):
            plain(out, f"  {line}")
    plain(out, _budget_line(forecast))
