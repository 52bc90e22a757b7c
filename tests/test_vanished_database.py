"""A database that vanished or was replaced under a running process is reported, never read
as an empty one ("no job", "nothing was bought") nor silently written to where no one looks."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.db import engine as engine_module
from orchestrator.db import queries
from orchestrator.db.engine import create_tables, make_engine, reading, transaction
from orchestrator.errors import DatabaseGone
from orchestrator.sandbox.server import SandboxServer
from tests.conftest import FAST_PROVIDER, POSTGRES_URL
from tests.inprocess import plan_job
from tests.support import COMMAND, Orchestrator, fast_env, write_job


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    assert database is not None
    return Path(database)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    create_tables(engine)
    plan_job(engine, quantity=2, name="before")
    yield engine
    engine.dispose()


def remove_database(path: Path) -> None:
    """What a user's ``rm`` or a cleaner does: the file goes, open connections keep it."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_a_deleted_file_is_refused_at_the_next_transaction(
    sqlite_engine: Engine, sqlite_url: str
) -> None:
    path = sqlite_path(sqlite_url)
    remove_database(path)

    with pytest.raises(DatabaseGone, match=str(path)), transaction(sqlite_engine) as session:
        queries.get_job(session, 1)
    with pytest.raises(DatabaseGone, match="deleted"), reading(sqlite_engine) as session:
        queries.get_job(session, 1)
    sqlite_engine.dispose()  # the next connection is a new one: sqlite3 would create the file
    with pytest.raises(DatabaseGone), transaction(sqlite_engine) as session:
        queries.get_job(session, 1)
    assert not path.exists(), "no empty database was made in its place"


def test_only_the_main_file_deleted_is_refused_too(sqlite_engine: Engine, sqlite_url: str) -> None:
    sqlite_path(sqlite_url).unlink()

    with pytest.raises(DatabaseGone), transaction(sqlite_engine) as session:
        queries.get_job(session, 1)


def test_a_file_replaced_by_another_is_refused(
    sqlite_engine: Engine, sqlite_url: str, tmp_path: Path
) -> None:
    path = sqlite_path(sqlite_url)
    other = tmp_path / "other.db"
    shutil.copyfile(path, other)
    os.replace(other, path)  # a restore from a backup, say: a new file at the same path

    with pytest.raises(DatabaseGone, match="replaced"), transaction(sqlite_engine) as session:
        queries.get_job(session, 1)


def open_again(url: str) -> None:
    engine = make_engine(url)
    try:
        create_tables(engine)
    finally:
        engine.dispose()


def test_a_new_engine_in_the_same_process_does_not_start_an_empty_database(
    sqlite_engine: Engine, sqlite_url: str
) -> None:
    """What ``run``'s export does after its watch: a new engine on the same path."""
    path = sqlite_path(sqlite_url)
    remove_database(path)

    with pytest.raises(DatabaseGone):
        open_again(sqlite_url)
    assert not path.exists()


def test_a_new_file_and_second_engines_on_it_are_no_false_alarm(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'fresh.db'}"
    first = make_engine(url)  # the file does not exist yet: the first connection makes it
    create_tables(first)
    second = make_engine(url)
    try:
        plan_job(second, quantity=1)
        for engine in (first, second):
            with transaction(engine) as session:
                assert queries.get_job(session, 1).name == "prop"
            with reading(engine) as session:
                assert queries.get_job(session, 1).name == "prop"
    finally:
        first.dispose()
        second.dispose()
    third = make_engine(url)  # after every engine was disposed, same file: still fine
    try:
        with transaction(third) as session:
            assert queries.get_job(session, 1).name == "prop"
    finally:
        third.dispose()


def test_a_thread_that_finds_no_file_while_another_creates_it_is_no_false_alarm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen once in CI (four threads migrating a new file): one thread's stat found no file,
    another thread then created and recorded it, and the first took it for one deleted."""
    path = str(tmp_path / "racing.db")
    real_stat = os.stat
    raced: list[str] = []

    def stat_losing_the_race(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if target == path and not raced:
            raced.append(target)
            # This stat found nothing; meanwhile the other thread's connection creates the
            # file, and its BEGIN records it.
            Path(path).touch()
            engine_module._check_file(path)
            raise FileNotFoundError(path)
        return real_stat(target, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_losing_the_race)
    monkeypatch.setattr(engine_module, "_files", {})
    engine_module._check_file(path)  # no DatabaseGone: this thread had never seen the file
    assert raced == [path]
    engine_module._check_file(path)  # and the file both threads now know is the same one


JOB = """\
name: vanishing
code_timeout: 10m
targets:
  - service: Telegram
    country: 16
    quantity: 4
    max_price: 2.00
"""


@pytest.fixture
def no_codes() -> Iterator[SandboxServer]:
    """A simulator that never sends a code: the job stays active until its orders are
    cancelled at the (clamped) code_timeout, about half a minute."""
    with SandboxServer(replace(FAST_PROVIDER, never_ratio=1.0)) as server:
        yield server


@pytest.mark.slow
def test_run_whose_sqlite_file_is_deleted_mid_run_exits_5_naming_it(
    tmp_path: Path, no_codes: SandboxServer, redis_url: str, sqlite_url: str
) -> None:
    orch = Orchestrator(
        workdir=tmp_path, env=fast_env(no_codes.url, redis_url, sqlite_url, tmp_path)
    )
    job = write_job(tmp_path, JOB)
    worker_log = tmp_path / "worker.log"
    orch.start_worker(threads=2, log=worker_log)  # one outside the run, which outlives it
    proc = subprocess.Popen(
        [*COMMAND, "run", str(job), "--workers", "1", "--export", "out/vanishing.csv"],
        cwd=tmp_path,
        env=orch.environ(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        # Bought, by either worker, and run's own worker up: one that boots after the file is
        # gone has never seen it, and makes a new one (the run then says "replaced").
        while len(no_codes.ledger.orders()) < 4 or not any("worker_started" in x for x in lines):
            assert time.monotonic() < deadline, "\n".join(lines)
            time.sleep(0.2)
        time.sleep(1.0)  # a few more orders and polls on the file
        path = sqlite_path(sqlite_url)
        remove_database(path)
        code = proc.wait(60)
        # A worker goes on running (the database may be a server that comes back), and says
        # at error level, for each message it cannot handle, why it is not working.
        deadline = time.monotonic() + 30
        while not worker_errors(worker_log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        orch.stop_all()
    reader.join(10)
    stdout = proc.stdout.read() if proc.stdout else ""

    assert code == ExitCode.UNAVAILABLE, "\n".join(lines)
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, "\n".join(lines)
    assert str(path) in errors[0] and "deleted" in errors[0]
    assert "no job" not in "\n".join(lines) + stdout
    assert not (tmp_path / "out" / "vanishing.csv").exists()
    assert not path.exists(), "nothing made an empty database in its place"
    assert worker_errors(worker_log.read_text()), worker_log.read_text()
    assert "order_placed" not in worker_log.read_text().split(str(path))[-1]


def worker_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if '"level": "error"' in line and "deleted" in line]


@pytest.mark.postgres
def test_status_against_a_dropped_postgresql_database_exits_5_with_one_line(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    engine = make_engine(postgres_url)
    create_tables(engine)
    plan_job(engine, quantity=1)
    engine.dispose()
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            name = make_url(postgres_url).database
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
    orch = Orchestrator(
        workdir=tmp_path, env=fast_env("http://127.0.0.1:9", redis_url, postgres_url, tmp_path)
    )

    result = orch.run("status", "1")

    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: the database could not be used: ")
    assert f'database "{name}" does not exist' in line
    assert "Traceback" not in result.stderr
