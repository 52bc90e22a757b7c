"""The ``orchestrator config`` command: the settings in effect, and where each one came from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
import yaml
from pydantic import BeforeValidator, SecretStr

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.config import CONFIG_ENV, Settings, load_settings
from orchestrator.durations import format_duration, parse_duration
from orchestrator.errors import ConfigError
from orchestrator.redact import mask, register, register_url

Source = Literal["env", "file", "default"]
NOT_SET = "(not set)"
HIDDEN = "***"


def config_path(config: Path | None) -> tuple[Path, bool]:
    """The settings file ``load_settings`` reads, and whether it exists."""
    path = config or Path(os.environ.get(CONFIG_ENV, "config.yaml"))
    return path, path.is_file()


def sources(settings_file: Path | None) -> dict[str, Source]:
    """Where each setting's value came from: environment over the file over the default."""
    # pydantic-settings matches variable names regardless of case, so this does too.
    environment = {name.upper() for name in os.environ}
    in_file: dict[str, Any] = {}
    if settings_file is not None and settings_file.is_file():
        loaded = yaml.safe_load(settings_file.read_text(encoding="utf-8"))
        in_file = loaded if isinstance(loaded, dict) else {}
    found: dict[str, Source] = {}
    for name, field in Settings.model_fields.items():
        variable = field.validation_alias
        if isinstance(variable, str) and variable.upper() in environment:
            found[name] = "env"
        elif name in in_file:
            found[name] = "file"
        else:
            found[name] = "default"
    return found


def register_secrets(settings: Settings) -> None:
    """Have ``redact.mask`` hide the settings' secrets from now on: the API key and the
    passwords DATABASE_URL and REDIS_URL carry."""
    register(settings.api_key.get_secret_value() if settings.api_key else None)
    register_url(settings.database_url, settings.redis_url)


def shown(name: str, value: object) -> str:
    """A setting's value as the user would write it, with secrets hidden."""
    if isinstance(value, SecretStr):
        return HIDDEN if value.get_secret_value() else NOT_SET
    if value is None:
        return NOT_SET
    if isinstance(value, float) and _is_duration(name):
        return format_duration(value)
    if isinstance(value, float):
        return f"{value:g}"
    # A URL's password (user:pw@ or ?password=), or the key anywhere: redact.mask.
    return mask(str(value))


def render(settings: Settings, origin: dict[str, Source]) -> list[str]:
    """One aligned ``name = value  # VARIABLE (source)`` line per setting."""
    rows = [
        (name, shown(name, getattr(settings, name)), str(field.validation_alias))
        for name, field in Settings.model_fields.items()
    ]
    name_width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    return [
        f"{name:<{name_width}} = {value:<{value_width}}  # {variable} ({origin[name]})"
        for name, value, variable in rows
    ]


def config_command(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            dir_okay=False,
            help="Settings file (default: $ORCHESTRATOR_CONFIG or ./config.yaml).",
        ),
    ] = None,
) -> None:
    """Print the settings in effect (environment > file > defaults), the API key hidden."""
    # `orchestrator --config F config` sets the app's global option; honour it here too.
    chosen = config or getattr(ctx.obj, "config", None)
    try:
        settings = load_settings(chosen)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(int(ExitCode.BAD_INPUT)) from None
    register_secrets(settings)
    path, exists = config_path(chosen)
    typer.echo(f"# settings file: {path}" + ("" if exists else " (not found; none read)"))
    for line in render(settings, sources(path if exists else None)):
        typer.echo(line)


def _is_duration(name: str) -> bool:
    field = Settings.model_fields[name]
    return any(
        isinstance(item, BeforeValidator) and item.func is parse_duration for item in field.metadata
    )
