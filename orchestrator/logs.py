"""Configure structlog once, in the CLI: JSON off a terminal, key=value on one; secrets masked."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Set by ``run`` for the workers whose lines it reads through a pipe and prints above its
# progress bar on a terminal: they should write for that terminal, not for a log file.
CONSOLE_ENV = "ORCHESTRATOR_LOG_CONSOLE"

_secrets: list[str] = []


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written: a live progress bar swaps in a proxy
    that prints above the bar, and a handler holding the original stream would break it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def at_least(level: str, floor: str) -> str:
    """The more severe of two level names (``--quiet`` raises the level to ``warning``)."""
    names = logging.getLevelNamesMapping()
    chosen = names.get(level.upper(), logging.INFO)
    return level.lower() if chosen >= names[floor.upper()] else floor.lower()


def mask_secrets(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace any registered secret in any string value (a last line of defence)."""
    if not _secrets:
        return event
    for key, value in event.items():
        if isinstance(value, str):
            masked = value
            for secret in _secrets:
                masked = masked.replace(secret, "***")
            event[key] = masked
    return event


def configure_logging(
    level: str = "info", *, json: bool | None = None, secret: str | None = None
) -> None:
    """Send structlog and stdlib logging to stderr at ``level``."""
    if secret:
        _secrets.append(secret)
    on_console = sys.stderr.isatty() or os.environ.get(CONSOLE_ENV) == "1"
    as_json = not on_console if json is None else json
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=on_console)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        mask_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Their INFO lines are per-request noise; ours say what matters.
    for noisy in ("httpx", "httpcore", "dramatiq", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
