"""The exit codes of ``orchestrator``, as the README's table lists them."""

from __future__ import annotations

import signal
from enum import IntEnum


class ExitCode(IntEnum):
    """What ``orchestrator`` exits with; documented in the README."""

    OK = 0  # every number got its code (or the command did what it said)
    INCOMPLETE = 1  # the job ended, and some numbers got no code (cancelled, expired, failed)
    BAD_INPUT = 2  # a job file, setting or argument is wrong; nothing was bought
    IN_DOUBT = 3  # some purchases have an unknown outcome: see `orchestrator resolve`
    OVERLAP = 4  # a job with this name is still active (cron overlap); nothing was submitted
    UNAVAILABLE = 5  # the provider, Redis or the database could not be used
    # Interrupted by SIGINT (Ctrl-C): ``run`` stopped buying and finished the orders it had
    # bought (or left at a second signal, naming those left and the command that finishes
    # them); with ``--workers 0``, the job goes on with the workers elsewhere.
    INTERRUPTED = 130
    TERMINATED = 143  # the same, for SIGTERM (a cron timeout, a shutdown)

    @classmethod
    def for_signal(cls, signum: int) -> ExitCode:
        """What an interrupted ``run`` exits with: 128 + the signal, as a shell would say."""
        return cls.TERMINATED if signum == signal.SIGTERM else cls.INTERRUPTED
