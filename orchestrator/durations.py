"""Durations as people write them in job files and settings ("45s", "10m", "1h30m") and back."""

from __future__ import annotations

import math
import re

# Units largest first, each at most once, so "1h30m" reads one way only; "1.5m" is allowed
# because people write it, and the parts are added up.
_DURATION = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?"
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SECONDS_PER_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0}
_EXPECTED = "a duration like 45s, 10m, 1.5m, 1h30m or a number of seconds"


def parse_duration(value: str | int | float) -> float:
    """Return the number of seconds ``value`` stands for (never negative).

    Accepts plain numbers (seconds, also as text such as ``"90"``) and ``h``/``m``/``s``
    parts in that order (``"2h"``, ``"1h30m"``, ``"45s"``, ``"1.5m"``). Raises ``ValueError``
    naming what was expected for anything else, including negative and non-finite values.
    """
    # ValueError, not TypeError, for every bad input: pydantic validators (config.py, spec.py)
    # report only ValueError as a field problem. bool is an int, and YAML `yes` is not 1s.
    if isinstance(value, bool):
        raise ValueError(f"must be {_EXPECTED}, got a boolean ({str(value).lower()})")  # noqa: TRY004
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"must be {_EXPECTED}, not negative or infinite, got {value}")
        return seconds
    if not isinstance(value, str):
        raise ValueError(f"must be {_EXPECTED}, got {type(value).__name__}")  # noqa: TRY004
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return float(text)
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"must be {_EXPECTED}, got {value!r}")
    return sum(
        float(amount) * _SECONDS_PER_UNIT[unit]
        for unit, amount in match.groupdict().items()
        if amount is not None
    )


def format_duration(seconds: float) -> str:
    """Return ``seconds`` the way ``parse_duration`` reads it: ``45s``, ``10m``, ``1h30m``.

    Rounds to the millisecond; a negative value gets a leading ``-`` (for "overdue by").
    """
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format a non-finite duration: {seconds}")
    # Whole milliseconds keep the arithmetic exact, so 5400.0 is "1h30m", not "1h29m60s".
    millis = round(abs(seconds) * 1000)
    sign = "-" if seconds < 0 and millis else ""
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if millis or not parts:
        whole, fraction = divmod(millis, 1000)
        decimals = f".{fraction:03d}".rstrip("0") if fraction else ""
        parts.append(f"{whole}{decimals}s")
    return sign + "".join(parts)
