"""Configure structlog once, in the CLI: JSON off a terminal, key=value on one; secrets masked.

A line logged with an exception carries it whole: in JSON, ``exception`` is structlog's
structured traceback (type, message, frames, chained causes; no local variables, which could
hold the key); on a terminal, the plain traceback. Every string in a line, the traceback's
included, goes through ``redact.mask``; on a terminal, also ``redact.for_terminal``, so a
provider's text cannot colour, move or rewrite the screen (JSON escapes control characters).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer

from orchestrator import redact

# Set by ``run`` for the workers whose lines it reads through a pipe and prints above its
# progress bar on a terminal: they should write for that terminal, not for a log file.
CONSOLE_ENV = "ORCHESTRATOR_LOG_CONSOLE"

# Structured tracebacks without locals: a frame's variables may hold the key or a password.
_dict_tracebacks = ExceptionRenderer(ExceptionDictTransformer(show_locals=False))


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
    """Mask every registered secret in every string of the line, nested ones included."""
    for key, value in event.items():
        event[key] = redact.mask_data(value)
    return event


def for_terminal(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Show control characters in the line's strings as escapes (a traceback keeps its lines)."""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact.for_terminal(value, newlines=key == "exception")
    return event


def configure_logging(
    level: str = "info", *, json: bool | None = None, secret: str | None = None
) -> None:
    """Send structlog and stdlib logging to stderr at ``level``; ``secret`` is registered with
    ``redact`` (the CLI registers the settings' secrets itself)."""
    redact.register(secret)
    on_console = sys.stderr.isatty() or os.environ.get(CONSOLE_ENV) == "1"
    as_json = not on_console if json is None else json
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=on_console, exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # The exception becomes text here, so the masking below reaches it too.
        _dict_tracebacks if as_json else structlog.processors.format_exc_info,
        mask_secrets,
    ]
    if not as_json:
        shared.append(for_terminal)
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
