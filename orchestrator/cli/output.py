"""What commands write on stdout: tables never cut when piped, and ``--json`` documents.

Every ``--json`` (``plan``, ``status``, ``balance``, ``services``, ``prices``) prints through
``print_json``, so each is one JSON document on stdout and nothing else (logs go to stderr),
with the same rules: money as a string with two decimals or more (``"1.80"``, ``json_money``),
timestamps ISO 8601 UTC (``"2026-11-24T22:16:52.710866Z"``, ``json_time``), secrets masked,
and every character outside ASCII written as a ``\\u`` escape, so that provider text (a name
holding ESC or a bidi override) reaches a terminal that shows the document as inert text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from rich.console import Console, ConsoleDimensions

from orchestrator.money import shown
from orchestrator.redact import mask_data

JSON_HELP = "Print one JSON document (money as strings; README: Commands)."

# Off a terminal a table is as wide as its cells: rich would otherwise take the width of any
# terminal among stdin and stderr (or 80 columns) and fold or crop what a script reads.
UNCUT = 100_000


class Stdout(Console):
    """The console of stdout: a terminal's width on a terminal, ``UNCUT`` off one."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNCUT, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


def json_money(amount: Decimal | None) -> str | None:
    """Money in a JSON document: ``"1.80"``; None stays None (null)."""
    return None if amount is None else shown(amount)


def json_time(value: datetime | None) -> str | None:
    """A timestamp in a JSON document: ISO 8601 in UTC with a ``Z``; None stays None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def print_json(document: Any, console: Console) -> None:
    """Write ``document`` as one indented JSON document and a newline, nothing else."""
    text = json.dumps(mask_data(document), indent=2, ensure_ascii=True)
    console.file.write(text + "\n")
    console.file.flush()
