"""Untrusted text made safe for where it goes: secrets masked, terminals, CSV cells (rule 8).

Shared ground: imports nothing of the orchestrator. One process-wide registry of secrets
(the API key, the passwords in DATABASE_URL and REDIS_URL) is filled once, when the settings
load (``register`` / ``register_url``); from then on ``mask`` hides them wherever text leaves
the process or is stored: provider errors (``errors.ProviderError``), log lines
(``logs.py``), database fields (``store.move``, ``store.record``), exports, the report, the
CLI's messages and ``orchestrator config``.

- ``mask(text)``: every registered secret, and any run of ``FRAGMENT`` or more of its
  characters (a key cut short by a provider message truncated mid-key, or echoed without its
  ``sk_live_`` prefix), becomes ``***``; so does the password of any URL in the text
  (``scheme://user:PASSWORD@host``, ``?password=PASSWORD``).
- ``for_terminal(text)``: masked, and every control character a terminal would act on (C0
  with ESC, DEL, C1, bidi overrides and isolates, line and paragraph separators) written as
  an escape (``\\x1b``, ``\\u202e``). Rich markup is the caller's to switch off (print it as a
  ``rich.text.Text`` or with ``markup=False``): ``[`` is no control character.
- ``for_csv(text)``: masked, and a value a spreadsheet would run as a formula (first
  non-space character ``=``, ``+``, ``-``, ``@``, a tab, CR or LF, or their full-width forms)
  prefixed with ``'`` (OWASP); a plain signed number (``+441234567890``, ``-5``) is left as it
  is: a spreadsheet reads it as that number, never as a formula.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

HIDDEN = "***"
FRAGMENT = 12  # characters of a long secret that, seen together, are masked as the secret
MIN_SECRET = 6  # shorter secrets (a weak password) are masked only where a URL holds them

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
# Cheap first look: every piece ``_pattern`` finds holds one of these (see ``_build``).
_checkpoints: tuple[str, ...] = ()

# scheme://user:PASSWORD@host, and a password given as a query parameter (libpq style).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^\s/@:]*:)[^\s/@]+(?P<tail>@)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&;](?:password|passwd|pwd)=)[^&;#\s]+", re.IGNORECASE)

# What a terminal acts on: C0 (ESC among them), DEL, C1, the bidi embeddings, overrides and
# isolates (a name that reverses the rest of the line), and line/paragraph separators.
_WIDE_CONTROLS = "\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\x00-\x1f{_WIDE_CONTROLS}]")
_CONTROL_BUT_NEWLINE = re.compile(f"[\x00-\x09\x0b-\x1f{_WIDE_CONTROLS}]")

# What makes a spreadsheet read a cell as a formula, and what is a plain number instead.
_FORMULA_START = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")


def register(*secrets: str | None) -> None:
    """Mask these secrets from now on, in this process (empty and None are ignored)."""
    global _pattern, _checkpoints
    fresh = {s for s in secrets if s and len(s) >= MIN_SECRET} - _secrets
    if not fresh:
        return
    with _lock:
        _secrets.update(fresh)
        _pattern, _checkpoints = _build(_secrets)


def register_url(*urls: str | None) -> None:
    """Mask the passwords these URLs carry (``user:pw@``, ``?password=pw``), wherever seen."""
    for url in urls:
        if url:
            register(*_url_passwords(url))


def forget() -> None:
    """Clear the registry (tests)."""
    global _pattern, _checkpoints
    with _lock:
        _secrets.clear()
        _pattern, _checkpoints = None, ()


def mask(text: str) -> str:
    """``text`` with every registered secret (or a long piece of one) and URL password hidden."""
    pattern = _pattern
    if pattern is not None and any(point in text for point in _checkpoints):
        text = _mask_pieces(pattern, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\g<head>{HIDDEN}\g<tail>", text)
    if "=" in text:
        text = _QUERY_PASSWORD.sub(rf"\g<head>{HIDDEN}", text)
    return text


def mask_data(value: Any) -> Any:
    """``mask`` over every string in nested dicts, lists and tuples; anything else as it is."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: mask_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(mask_data(item) for item in value)
    return value


def for_terminal(text: str, *, newlines: bool = False) -> str:
    """``text`` masked, each control character shown as an escape; ``newlines`` keeps LF (a
    traceback's lines)."""
    control = _CONTROL_BUT_NEWLINE if newlines else _CONTROL
    return control.sub(_escape, mask(text))


def for_csv(text: str) -> str:
    """``text`` masked, and neutralised for a CSV cell: never read as a formula."""
    text = mask(text)
    first = text.lstrip(" ")[:1]
    if first in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(text.strip(" ")):
        return "'" + text
    return text


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _url_passwords(url: str) -> list[str]:
    found: list[str] = []
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    for match in _QUERY_PASSWORD.finditer(url):
        raw = match.group()[len(match.group("head")) :]
        found += [raw, unquote(raw)]
    return found


def _build(secrets: Iterable[str]) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """One pattern finding any secret, or any FRAGMENT characters of a long one (overlapping
    matches are found by a lookahead, and merged into the spans to hide); and checkpoints,
    substrings at least one of which every such piece holds, so that text holding none (nearly
    every log value) is passed over with a few plain substring searches."""
    pieces: set[str] = set()
    checkpoints: set[str] = set()
    step = FRAGMENT // 2
    for secret in secrets:
        if len(secret) <= FRAGMENT:
            pieces.add(secret)
            checkpoints.add(secret)
            continue
        pieces.update(secret[i : i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1))
        # A window of FRAGMENT characters starting at i holds the `step` characters starting
        # at the next multiple of `step` from i.
        checkpoints.update(secret[k : k + step] for k in range(0, len(secret) - step + 1, step))
    alternatives = "|".join(re.escape(p) for p in sorted(pieces, key=len, reverse=True))
    return re.compile(f"(?=({alternatives}))"), tuple(checkpoints)


def _mask_pieces(pattern: re.Pattern[str], text: str) -> str:
    spans: list[list[int]] = []
    for match in pattern.finditer(text):
        start, end = match.start(), match.start() + len(match.group(1))
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, end in spans:
        out += [text[last:start], HIDDEN]
        last = end
    out.append(text[last:])
    return "".join(out)
