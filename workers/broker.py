"""Set up the Dramatiq broker before any actor module is imported.

The URL comes from REDIS_URL (``orchestrator worker`` and ``run`` set it to the embedded
server when the user has not); ``stub://`` selects dramatiq's StubBroker for tests.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from workers import NAMESPACE


def make_broker(url: str | None) -> dramatiq.Broker:
    """A Redis broker for ``url``, or a StubBroker for ``stub://``."""
    if not url:
        raise RuntimeError("REDIS_URL is not set: run workers through `orchestrator worker`")
    if url.startswith("stub://"):
        return StubBroker()
    return RedisBroker(  # type: ignore[no-untyped-call]
        url=url, namespace=NAMESPACE, heartbeat_timeout=15_000
    )


broker = make_broker(os.environ.get("REDIS_URL"))
dramatiq.set_broker(broker)
