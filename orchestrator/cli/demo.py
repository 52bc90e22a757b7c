"""``orchestrator demo``: a local simulator and embedded defaults, so the example runs anywhere."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from orchestrator.sandbox.config import DEMO_API_KEY, SandboxConfig
from orchestrator.sandbox.server import SandboxServer

DEMO_DATA_DIR = Path(".orchestrator/demo")

# A provider that answers in seconds rather than minutes, so the demo ends in under a minute.
DEMO_SANDBOX = SandboxConfig(
    seed=7,
    balance=Decimal("50.00"),
    code_delay=(1.0, 12.0),
    never_ratio=0.3,
    rate_limit=5.0,
    cancel_min_age=8.0,
    expiry=90.0,
)


@contextmanager
def demo_environment() -> Iterator[dict[str, str]]:
    """Serve the simulator for the duration; yield the environment that points at it."""
    for name in ("REDIS_URL", "DATABASE_URL"):
        os.environ.pop(name, None)  # the demo shows the embedded defaults, whatever is set
    with SandboxServer(DEMO_SANDBOX) as server:
        yield {
            "LEGITSMS_BASE_URL": server.url,
            "LEGITSMS_API_KEY": DEMO_API_KEY,
            "ORCHESTRATOR_DATA_DIR": str(DEMO_DATA_DIR),
            "ORCHESTRATOR_RATE_LIMIT": "4",
            "ORCHESTRATOR_POLL_INTERVAL": "2s",
            "ORCHESTRATOR_CANCEL_MIN_AGE": "8s",
            "ORCHESTRATOR_PROVIDER_EXPIRY": "90s",
            "ORCHESTRATOR_EXPIRY_MARGIN": "20s",
            "ORCHESTRATOR_SWEEP_INTERVAL": "10s",
            "ORCHESTRATOR_WORKER_PROCESSES": "2",
        }
