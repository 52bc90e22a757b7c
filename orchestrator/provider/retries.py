"""Which failed calls are tried again: a read after any blip, a cancel unless it may have acted,
an order only when it provably never left; and how long a 429 asks everyone to wait."""

from __future__ import annotations

import math

from orchestrator.errors import (
    MalformedResponse,
    NotSent,
    ProviderUnavailable,
    RateLimited,
    Throttled,
    TransportError,
)

RETRYABLE_STATUSES = frozenset({502, 503, 504})
RETRY_AFTER_CAP = 120.0  # seconds: the longest one 429 may hold every process on the key
PATIENCE = 10.0  # seconds during which a read or a cancel may begin another attempt


def read_again(exc: BaseException) -> bool:
    """Reads: a replay cannot charge money, so retry any blip."""
    if isinstance(exc, Throttled):
        return False  # our own limiter says wait long: a delayed message, not a sleep
    if isinstance(exc, ProviderUnavailable):
        return exc.status in RETRYABLE_STATUSES
    # A non-JSON page (a proxy's maintenance notice) is a blip too; a JSON body lacking a
    # field is not, but replaying a read costs only a request, so both are retried.
    return isinstance(exc, TransportError | RateLimited | MalformedResponse)


def cancel_again(exc: BaseException) -> bool:
    """POST /set_status: a replay is safe when the first try never acted or got no answer.

    An answer that came back and is not the documented success (MalformedResponse) is not
    replayed: the cancel may have acted, and settle reconciles it by reading /status. After a
    lost answer (OutcomeUnknown, 502/503/504) the replay's refusal is marked ``replayed``.
    """
    if isinstance(exc, MalformedResponse):
        return False
    return read_again(exc)


def provably_unsent(exc: BaseException) -> bool:
    """POST /order: retry only what never reached the provider, or what it refused with 429."""
    if isinstance(exc, Throttled):
        return False
    return isinstance(exc, NotSent | RateLimited)


def retry_after_seconds(header: str | None) -> float:
    """Seconds from a Retry-After header; 2 s (the provider's usual spacing) when unreadable."""
    try:
        seconds = float(header if header is not None else "2")
    except ValueError:
        return 2.0
    # "inf" and "nan" parse as floats, but no caller can wait (or build a timedelta) from them.
    return max(0.0, seconds) if math.isfinite(seconds) else 2.0
