"""Set up the Dramatiq broker before any actor module is imported.

The URL comes from REDIS_URL (``orchestrator worker`` and ``run`` set it to the embedded
server when the user has not).
"""

from __future__ import annotations

import os

import dramatiq

from workers import NAMESPACE
from workers.prompt_delays import PromptDelaysBroker


def make_broker(url: str | None) -> dramatiq.Broker:
    """The Redis broker at ``url`` (its delayed messages acted on when due: prompt_delays.py)."""
    if not url:
        raise RuntimeError("REDIS_URL is not set: run workers through `orchestrator worker`")
    return PromptDelaysBroker(url=url, namespace=NAMESPACE, heartbeat_timeout=15_000)


broker = make_broker(os.environ.get("REDIS_URL"))
dramatiq.set_broker(broker)
