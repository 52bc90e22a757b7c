"""The database engine: SQLite (WAL, BEGIN IMMEDIATE) by default, PostgreSQL by URL."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

from orchestrator.db import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from orchestrator.errors import DatabaseGone, FolderUnusable

SQLITE_BUSY_TIMEOUT_MS = 60_000
# Connections beyond the pool's 10 that a process may open at a busy moment: a worker's
# threads plus the sweep's, each holding one at once, must never queue for a connection.
MAX_OVERFLOW = 30
SQLITE_CACHE_KIB = 1024  # page cache per connection (SQLite's default is 2 MiB)
_READ_ONLY = "orchestrator_read_only"  # execution option of the engines reading() uses


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite, one safe to share between processes."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # READ COMMITTED, whatever the server's default: store.submit_job's check, made after
        # waiting for a lock, must see what was committed while it waited.
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=MAX_OVERFLOW,
            isolation_level="READ COMMITTED",
        )
    path: str | None = None
    if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
        path = os.path.abspath(Path(parsed.database).expanduser())
        _check_file(path)  # a file this process already used must still be the same one
        _writable(Path(path).parent)
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_size=10,
        max_overflow=MAX_OVERFLOW,
    )
    _make_sqlite_safe(engine, path)
    return engine


def _writable(folder: Path) -> None:
    """Make the SQLite file's folder, and check this process may write in it: SQLite keeps
    its write-ahead log and shared memory beside the file, and would only say "unable to
    open database file"."""
    hint = "set ORCHESTRATOR_DATA_DIR (or DATABASE_URL) to a folder this user may write"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FolderUnusable(
            f"the database's folder {folder} cannot be made: {exc.strerror or exc}; {hint}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise FolderUnusable(f"the database's folder {folder} cannot be written; {hint}")


# The identity (device, inode) of each SQLite file this process has used, by absolute path.
# Open connections keep a deleted file alive: without this, a process whose file was deleted
# (or replaced, by a restore say) goes on reading and writing a copy no other process sees,
# and a new engine on the path starts an empty database ("no job", "nothing was bought").
_files: dict[str, tuple[int, int]] = {}
_files_lock = threading.Lock()


def _check_file(path: str) -> None:
    """Raise DatabaseGone if the file at ``path`` is not the one this process has been using.

    The first sight of the file records it: an engine may create its file (first connection),
    and any number of engines in a process may share one. Costs one stat (microseconds).
    """
    # Looked up before the stat: a thread that finds no file while another creates and records
    # it (a new database's first connections, racing) must not take it for one deleted.
    known = _files.get(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if known is not None:
            raise DatabaseGone(
                f"the database {path} was deleted while in use; stopping rather than going "
                "on with a copy no other process sees (what was bought since it started is "
                "recorded only there: see the provider's dashboard)"
            ) from None
        return
    seen = (info.st_dev, info.st_ino)
    if known is None:
        with _files_lock:
            known = _files.setdefault(path, seen)
    if known != seen:
        raise DatabaseGone(
            f"the database {path} was replaced by another file while in use; stopping rather "
            "than mixing the two (run again to use the new file)"
        )


def _use_wal(cursor: Any) -> None:
    # WAL is a property of the file, switched on by its first connection. Connections racing
    # to switch a new file get "database is locked" at once (SQLite does not wait out the
    # busy timeout for a journal-mode change), so the switch is retried.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _make_sqlite_safe(engine: Engine, path: str | None) -> None:
    @event.listens_for(engine, "do_connect")
    def before_connect(*_args: Any) -> None:
        # Before sqlite3 opens the path: it would quietly create an empty file in its place.
        if path is not None:
            _check_file(path)

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        _use_wal(cursor)
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # Each pooled connection keeps its own page cache, which fills as the file grows: a
        # small one keeps a worker's memory flat from a small batch to a large one.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        # Take the write lock up front: a deferred transaction that later writes can fail at
        # once with "database is locked" when another process writes, busy timeout or not.
        # A reading() transaction never writes, so it reads its WAL snapshot without the lock.
        if path is not None:
            _check_file(path)  # never begin on a file that is no longer the database
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN DEFERRED")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_tables(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; see ``orchestrator.db.migrate``)."""
    from orchestrator.db.migrate import upgrade  # late: alembic takes ~0.1 s to import

    upgrade(engine)


@contextmanager
def reading(engine: Engine) -> Iterator[Session]:
    """A session for reads only: on SQLite it takes no write lock, so it never queues.

    What it read may be stale by the time the caller acts on it: every write that follows
    is a compare-and-set (see ``store.move``), which refuses a row that changed meanwhile.
    """
    reader = engine.execution_options(**{_READ_ONLY: True})  # shares the engine's pool
    with Session(reader, expire_on_commit=False) as session:
        yield session  # closing the session ends the read (a rollback would expire its objects)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work is committed on success and rolled back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def savepoint(session: Session) -> Iterator[None]:
    """Within a transaction: a write the block fails (a unique index refusing it, say) is
    undone alone, and the transaction's other work stands.

    Plain SQL on the session's connection: SQLAlchemy's ``begin_nested`` compiles a new
    SAVEPOINT and RELEASE statement each time, a third of the CPU of recording an order in
    bench (a) (yappi). Only Core statements may run inside (store.py's): the session's
    objects are not told of a rollback to it.
    """
    connection = session.connection()
    connection.exec_driver_sql("SAVEPOINT orchestrator_write")
    try:
        yield
    except BaseException:
        connection.exec_driver_sql("ROLLBACK TO SAVEPOINT orchestrator_write")
        connection.exec_driver_sql("RELEASE SAVEPOINT orchestrator_write")
        raise
    connection.exec_driver_sql("RELEASE SAVEPOINT orchestrator_write")
