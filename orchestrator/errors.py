"""Every exception the orchestrator raises, as one tree.

::

    OrchestratorError
    ├── ConfigError                 bad settings (config.yaml or environment)
    ├── SpecError                   bad job file: names the file, the field and the problem
    ├── JobNotFound                 no job by that id or name
    ├── JobOverlap                  a job of that name is still active (cron overlap)
    ├── DatabaseGone                the SQLite file was deleted or replaced while in use
    ├── FolderUnusable              a folder the orchestrator writes in (the data folder, the
    │                               SQLite file's) cannot be made or written
    ├── OutputRefused               an output path (export, report) is a folder, FIFO, device
    │                               or socket, or cannot be written
    ├── ResolveRefused              `resolve` cannot apply: no such slot, not in doubt, or the
    │                               order id is already another slot's
    └── ProviderError               anything about talking to LegitSMS
        ├── ProviderRejected        a documented error answer ({"code", "message", "data"})
        │   ├── InvalidKey          401 invalid_key
        │   ├── MissingParams       400 missing_params
        │   ├── NoStock             404 no_stock
        │   ├── InsufficientFunds   402 insufficient_funds
        │   ├── NotFound            404 not_found
        │   ├── CannotCancel        400 cannot_cancel (the code already came)
        │   └── CancelFailed        400 cancel_failed (expired, finished, or too early)
        ├── RateLimited             429; carries retry_after seconds
        ├── ProviderUnavailable     a 5xx answer: the request may or may not have acted
        ├── MalformedResponse       HTML, non-JSON, a JSON body missing a field, or a 2xx
        │   │                       body that is not the endpoint's documented success
        │   └── UnusableOrder       POST /order answered a usable order_id, but something else
        │       │                   in the answer is unusable (phone, or an error beside it):
        │       │                   the number was bought; carries order_id, phone, cost
        │       └── UnpricedOrder   ... its cost is missing, not a number, negative,
        │                           non-finite or too large to store: carries order_id, phone
        └── TransportError          no HTTP answer at all
            ├── NotSent             the request provably never left (connect error/timeout)
            │   └── Throttled       our shared rate limiter had no slot soon enough
            └── OutcomeUnknown      it left, and no answer came back (read timeout, reset)

Whether a failed ``POST /order`` may have bought a number is the question that matters
most: only ``NotSent``, ``RateLimited`` and ``ProviderRejected`` prove it did not, and an
``UnusableOrder`` proves it did.

A documented error ``code`` is raised as its ``ProviderRejected`` class whatever the HTTP status
it came with (a 200 ``cancel_failed`` is a ``CancelFailed``, with ``status`` 200), except on
``POST /order`` when the answer also names a usable ``order_id`` (then ``UnusableOrder``).
"""

from __future__ import annotations

from decimal import Decimal

from orchestrator.redact import mask


class OrchestratorError(Exception):
    """Raised for any failure the orchestrator knows how to describe.

    Its message never holds a registered secret (``redact``): provider text quoted in it (an
    error message repeating the key) is masked when the exception is made, and again when it
    is shown, for a secret registered in between.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(mask(arg) if isinstance(arg, str) else arg for arg in args))

    def __str__(self) -> str:
        return mask(super().__str__())


class ConfigError(OrchestratorError):
    """Raised when settings from config.yaml or the environment are invalid."""


class SpecError(OrchestratorError):
    """Raised when a job file cannot be read, parsed or validated."""

    def __init__(self, path: str, field: str, problem: str) -> None:
        self.path = path
        self.field = field
        self.problem = problem
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {problem}")


class JobNotFound(OrchestratorError):
    """Raised when no job matches the id or name given."""


class JobOverlap(OrchestratorError):
    """Raised when a job is submitted while another of the same name is still active."""


class DatabaseGone(OrchestratorError):
    """Raised when the SQLite file a process has been using was deleted or replaced."""


class FolderUnusable(OrchestratorError):
    """Raised when a folder the orchestrator must write in cannot be made or written."""


class OutputRefused(OrchestratorError):
    """Raised when an output file cannot be written where asked: nothing is left behind."""


class ResolveRefused(OrchestratorError):
    """Raised when ``resolve`` cannot apply: no such slot, not in doubt, or an order id in use."""


class ProviderError(OrchestratorError):
    """Raised when a call to the provider did not succeed."""


class ProviderRejected(ProviderError):
    """Raised when the provider answered with a documented error body."""

    code = "unknown"
    #: Set when an earlier attempt of the same call got no answer: a refusal may then be
    #: the provider meeting the effect of that first attempt (a cancel that already went through).
    replayed = False

    def __init__(self, message: str, *, status: int, code: str | None = None) -> None:
        self.status = status
        if code is not None:
            self.code = mask(code)
        self.message = mask(message)
        super().__init__(f"{self.code} ({status}): {message}")


class InvalidKey(ProviderRejected):
    """Raised when the provider does not accept the API key."""

    code = "invalid_key"


class MissingParams(ProviderRejected):
    """Raised when the provider says a parameter is missing or unknown."""

    code = "missing_params"


class NoStock(ProviderRejected):
    """Raised when the provider has no number for that service and country."""

    code = "no_stock"


class InsufficientFunds(ProviderRejected):
    """Raised when the wallet balance is too low for the purchase."""

    code = "insufficient_funds"


class NotFound(ProviderRejected):
    """Raised when the provider knows no order with that id."""

    code = "not_found"


class CannotCancel(ProviderRejected):
    """Raised when a cancel is refused because the code already arrived."""

    code = "cannot_cancel"


class CancelFailed(ProviderRejected):
    """Raised when a cancel is refused: expired, already finished, or too early."""

    code = "cancel_failed"


REJECTIONS: dict[str, type[ProviderRejected]] = {
    cls.code: cls
    for cls in (
        InvalidKey,
        MissingParams,
        NoStock,
        InsufficientFunds,
        NotFound,
        CannotCancel,
        CancelFailed,
    )
}


class RateLimited(ProviderError):
    """Raised when the provider answered 429 Too Many Requests."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"rate limited; retry after {retry_after:g}s")


class ProviderUnavailable(ProviderError):
    """Raised when the provider answered with a 5xx status."""

    def __init__(self, status: int) -> None:
        self.status = status
        super().__init__(f"provider answered HTTP {status}")


class MalformedResponse(ProviderError):
    """Raised when an answer is not the JSON the reference describes."""


class UnusableOrder(MalformedResponse):
    """Raised when ``POST /order`` answered an order we cannot use as it is, but did buy.

    The answer names a usable ``order_id``; the phone (``None`` when unusable) or the rest
    of the body is not what the reference describes. The order must be recorded (never
    thrown away) and cancelled for a refund as soon as the provider allows. ``cost`` is the
    charge when it was usable, else ``None``.
    """

    def __init__(
        self, message: str, *, order_id: str, phone: str | None, cost: Decimal | None
    ) -> None:
        self.order_id = order_id
        self.phone = phone
        self.cost = cost
        super().__init__(message)


class UnpricedOrder(UnusableOrder):
    """Raised when ``POST /order`` answered a usable ``order_id`` with an unusable cost.

    Missing, not a number, negative, non-finite, or above ``client.MAX_COST``: what was paid
    is unknown, so the slot holds its cap and the order is cancelled for a refund.
    """

    def __init__(self, message: str, *, order_id: str, phone: str | None) -> None:
        super().__init__(message, order_id=order_id, phone=phone, cost=None)


class TransportError(ProviderError):
    """Raised when no HTTP answer came back at all."""


class NotSent(TransportError):
    """Raised when the request provably never reached the provider."""


class OutcomeUnknown(TransportError):
    """Raised when the request left but its answer was lost."""


class Throttled(NotSent):
    """Raised when the shared rate limit has no slot soon enough; nothing was sent."""

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(f"rate limit busy; try again in {retry_after:.2f}s")
