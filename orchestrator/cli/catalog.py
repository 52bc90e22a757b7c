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
from orchestrator.money import shown
from orchestrator.redact import for_terminal


def balance(ctx: typer.Context) -> None:
    """Print the wallet balance."""
    with guard():
        settings = context(ctx).settings()
        with broker_url(settings) as url, client_for(settings, url) as client:
            out.print(shown(client.balance()))


def services(ctx: typer.Context) -> None:
    """List the services (apps) and their ids."""
    with guard():
        settings = context(ctx).settings()
        with broker_url(settings) as url, client_for(settings, url) as client:
            rows = client.services()
    table = Table("id", "service")
    for service in rows:
        table.add_row(str(service.id), Text(for_terminal(service.name)))
    out.print(table)


def prices(
    ctx: typer.Context, service: Annotated[str, typer.Argument(help="A service name or id.")]
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
    table = Table("country id", "country", "cost", "stock", "success %")
    for price in sorted(rows.values(), key=lambda p: p.cost):
        table.add_row(
            str(price.country_id),
            Text(for_terminal(price.country)),
            shown(price.cost),
            str(price.count),
            str(price.rate),
        )
    out.print(table)
