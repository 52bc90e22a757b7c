"""The ``orchestrator sandbox`` command: serve the provider simulator in the foreground."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from orchestrator.errors import ConfigError
from orchestrator.sandbox.config import SandboxConfig, parse_code_delay
from orchestrator.sandbox.server import SandboxServer, serve_forever

_FAULTS = "Faults (probability per request, 0-1)"


def _probability(help_text: str) -> Any:
    return typer.Option(min=0.0, max=1.0, help=help_text, rich_help_panel=_FAULTS)


def sandbox_command(  # typer passes every option by name
    *,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to bind (0 picks a free one).")
    ] = 8765,
    seed: Annotated[int | None, typer.Option(help="Seed for every random draw.")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            exists=True,
            dir_okay=False,
            help="YAML mapping of sandbox settings (or a file with a `sandbox:` section).",
        ),
    ] = None,
    balance: Annotated[str | None, typer.Option(help="Starting balance in USD.")] = None,
    rate_limit: Annotated[
        float | None, typer.Option(min=0.0, help="Requests per second per key; 0 is off.")
    ] = None,
    code_delay: Annotated[
        str | None, typer.Option(metavar="MIN-MAX", help="Seconds until a code arrives.")
    ] = None,
    never_ratio: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Share of orders that never get a code (default: 1 - rate)."
        ),
    ] = None,
    cancel_min_age: Annotated[
        float | None, typer.Option(min=0.0, help="Seconds before a cancel is accepted.")
    ] = None,
    expiry: Annotated[
        float | None, typer.Option(min=0.0, help="Seconds until an order without code expires.")
    ] = None,
    fault_5xx: Annotated[float | None, _probability("Answer 502/503 HTML, not acting.")] = None,
    fault_429: Annotated[float | None, _probability("Answer a spurious 429.")] = None,
    fault_slow: Annotated[float | None, _probability("Act, then answer late.")] = None,
    fault_non_json: Annotated[float | None, _probability("Answer 200 with HTML.")] = None,
    fault_drop_order: Annotated[
        float | None, _probability("POST /order: sell, then close without answering.")
    ] = None,
    slow_seconds: Annotated[
        float | None,
        typer.Option(min=0.0, help="Delay of a slow answer.", rich_help_panel=_FAULTS),
    ] = None,
) -> None:
    """Serve a simulator of the LegitSMS V2 API until Ctrl-C."""
    settings: dict[str, Any] = {}
    if config is not None:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        if isinstance(loaded, dict) and isinstance(loaded.get("sandbox"), dict):
            loaded = loaded["sandbox"]
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must hold a YAML mapping", param_hint="--config")
        settings.update(loaded)
    if code_delay is not None:
        try:
            settings["code_delay"] = parse_code_delay(code_delay)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--code-delay") from exc
    given = {
        "seed": seed,
        "balance": balance,
        "rate_limit": rate_limit,
        "never_ratio": never_ratio,
        "cancel_min_age": cancel_min_age,
        "expiry": expiry,
        "fault_5xx": fault_5xx,
        "fault_429": fault_429,
        "fault_slow": fault_slow,
        "fault_non_json": fault_non_json,
        "fault_drop_order": fault_drop_order,
        "slow_seconds": slow_seconds,
    }
    # Options given on the command line win over the file.
    settings.update({name: value for name, value in given.items() if value is not None})
    try:
        sandbox_config = SandboxConfig.from_mapping(settings)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from exc
    serve_forever(sandbox_config, host, port, ready=_announce)


def _announce(server: SandboxServer) -> None:
    # The demo key is made up for the sandbox; printing it is the point, unlike a real key.
    typer.echo(f"LegitSMS sandbox serving at {server.url}")
    typer.echo(f"API key: {server.config.api_keys[0]}")
    typer.echo(f"Ledger:  {server.root_url}/_sandbox/ledger")
    typer.echo("Press Ctrl-C to stop.")
