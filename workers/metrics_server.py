"""``/metrics`` for one host's workers: dramatiq's own metrics and ours, on one port.

One port per supervisor (``worker --metrics-port``, ``run --metrics-port``), not one per
worker process. The worker processes do not serve: in prometheus_client's multiprocess mode
(which dramatiq's Prometheus middleware uses too) each writes its counters to files in a
folder of this server's, named in their environment before they start (the mode is chosen
when prometheus_client is first imported). The supervisor, which does no work itself, adds
them up at each scrape and reads the money gauges from the database once
(``lifecycle/gauges.py``): registered per worker, they would be summed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from orchestrator.config import Settings
from orchestrator.errors import ConfigError
from orchestrator.lifecycle.gauges import MoneyCollector
from orchestrator.lifecycle.wiring import make_database

log = structlog.get_logger(__name__)

# prometheus_client reads the first two (old and new spelling); dramatiq's middleware the last.
FOLDER_ENV = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir", "dramatiq_prom_db")


class MetricsServer:
    """Serves ``/metrics`` on ``host:port`` in a thread until ``close``."""

    def __init__(self, settings: Settings, *, host: str, port: int) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="orchestrator-metrics-"))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(self.folder))  # type: ignore[no-untyped-call]
        self._engine = make_database(settings)
        registry.register(MoneyCollector(self._engine, settings))
        try:
            self._server, self._thread = start_http_server(port, host, registry)
        except OSError as exc:
            self._remove()
            raise ConfigError(
                f"--metrics-port {port} cannot be used on {host}: {exc.strerror or exc}"
            ) from None
        self.port = int(self._server.server_address[1])
        log.info("metrics_serving", host=host, port=self.port)

    def worker_env(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` for a worker process whose metrics this server shows."""
        return {**env, **dict.fromkeys(FOLDER_ENV, str(self.folder))}

    def process_gone(self, pid: int) -> None:
        """Forget a worker process that ended (its live gauges, such as dramatiq's messages in
        progress, are dropped; its counters stay counted)."""
        multiprocess.mark_process_dead(pid, str(self.folder))  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stop serving and remove the folder."""
        self._server.shutdown()
        self._server.server_close()
        self._engine.dispose()
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def count_messages(broker: Any) -> None:
    """In a worker process started by a MetricsServer: add dramatiq's Prometheus middleware,
    which counts messages, errors, retries and their durations into the server's folder."""
    if not os.environ.get(FOLDER_ENV[0]):
        return
    from dramatiq.middleware.prometheus import Prometheus

    middleware = Prometheus()
    broker.add_middleware(middleware)
    # dramatiq's own CLI sends this event after forking; our processes are not forked by it.
    middleware.after_process_boot(broker)  # type: ignore[no-untyped-call]
