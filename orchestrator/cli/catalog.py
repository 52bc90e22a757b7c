"""What the provider offers: ``balance``, ``services``, ``prices``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from orchestrator.cli.common import (
    broker_url,
    client_for,
    context,
    fail,
    guard,
    out,
)
from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.output import JSON_HELP, json_money, print_json
from orchestrator.money import shown
from orchestrator.redact import for_terminal

AS_JSON = typer.Option("--json", help=JSON_HELP)


def balance(ctx: typer.Context, as_json: Annotated[bool, AS_JSON] = False) -> None:
    """Print the wallet balance."""
    with guard():
        settings = context(ctx).settings()
        with broker_url(settings) as url, client_for(settings, url) as client:
            amount = client.balance()
    if as_json:
        print_json({"balance": json_money(amount)}, out)
        return
    out.print(shown(amount))


def services(ctx: typer.Context, as_json: Annotated[bool, AS_JSON] = False) -> None:
    """List the services (apps) and their ids."""
    with guard():
        settings = context(ctx).settings()
        with broker_url(settings) as url, client_for(settings, url) as client:
            rows = client.services()
    if as_json:
        print_json({"services": [{"id": s.id, "name": s.name} for s in rows]}, out)
        return
    table = Table("id", "service")
    for service in rows:
        table.add_row(str(service.id), Text(for_terminal(service.name)))
    out.print(table)


def prices(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="A service name or id.")],
    as_json: Annotated[bool, AS_JSON] = False,
) -> None:
    """List live prices, stock and success rates per country for a service."""
    with guard():
        settings = context(ctx).settings()
        with broker_url(settings) as url, client_for(settings, url) as client:
            known = client.services()
            match = [s for s in known if str(s.id) == service or s.name.lower() == service.lower()]
            if not match:
                fail(ExitCode.BAD_INPUT, f"no service {service!r}; see `orchestrator services`")
            rows = client.prices(match[0].id)
    ranked = sorted(rows.values(), key=lambda p: p.cost)
    if as_json:
        countries = [
            {
                "id": p.country_id,
                "name": p.country,
                "price": json_money(p.cost),
                "stock": p.count,
                "advertised_rate": p.rate / 100,
            }
            for p in ranked
        ]
        service_json = {"id": match[0].id, "name": match[0].name}
        print_json({"service": service_json, "countries": countries}, out)
        return
    table = Table("country id", "country", "cost", "stock", "success %")
    for price in ranked:
        table.add_row(
            str(price.country_id),
            Text(for_terminal(price.country)),
            shown(price.cost),
            str(price.count),
            str(price.rate),
        )
    out.print(table)
