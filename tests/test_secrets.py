"""The API key travels to the provider in its header and is written nowhere else (rule 8).

One whole job runs at debug logging, with provider faults on so the error paths log too.
Everything a user, an operator or another local user could read afterwards, or while it
runs, is searched for the key: the command's output, the CSV, the database, Redis, the
worker processes' command lines and every file in the test's folder.
"""

from __future__ import annotations

import contextlib
import csv
import os
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.server import SandboxServer
from tests.running import descendants
from tests.support import COMMAND, Orchestrator, database_as_text, write_job

pytestmark = pytest.mark.slow

KEY = "sk_live_" + secrets.token_hex(16)
# The random part alone too: a key cut at its prefix, or re-prefixed, is still the key.
NEEDLES = (KEY.encode(), KEY.removeprefix("sk_live_").encode())

PROVIDER = SandboxConfig(
    seed=11,
    api_keys=(KEY,),
    code_delay=(0.2, 3.0),
    never_ratio=0.3,
    cancel_min_age=2.0,
    expiry=40.0,
)
# Switched on once the job is submitted: a fault while `run` resolves the job's names fails
# the command before anything is bought, which would end the test before the error paths ran.
FAULTY = replace(PROVIDER, fault_5xx=0.05, fault_429=0.05, fault_non_json=0.05)

JOB = """\
name: secrets
budget: 50.00
code_timeout: 4s
targets:
  - service: Telegram
    country: United Kingdom
    quantity: 6
    max_price: 2.00
  - service: 924
    countries: [16, 1]
    quantity: 6
    max_price: 0.50
"""
SLOTS = 12
RUN_TIMEOUT = 90.0


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """The simulator, knowing only this test's key."""
    with SandboxServer(PROVIDER) as server:
        yield server


class RedisMonitor:
    """Every command any client sends to the Redis server while it runs (Redis ``MONITOR``).

    Snapshots of the keys miss messages that came and went between two looks; the command
    stream misses nothing. Only what the test asks about is kept: where the key was seen,
    and how many commands went to the test's database.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._db_tag = f" [{int(parts.path.strip('/') or 0)} ".encode()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="redis-monitor", daemon=True)
        self._ready = threading.Event()
        self.commands_in_db = 0
        self.leaks: list[bytes] = []

    def __enter__(self) -> RedisMonitor:
        self._thread.start()
        assert self._ready.wait(5), "MONITOR did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _read(self) -> None:
        with socket.create_connection(self._address, timeout=0.2) as sock:
            sock.sendall(b"MONITOR\r\n")
            pending = b""
            while not self._stop.is_set():
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                *lines, pending = (pending + data).split(b"\r\n")
                for line in lines:
                    if line == b"+OK":
                        self._ready.set()
                    self.commands_in_db += self._db_tag in line
                    if any(needle in line for needle in NEEDLES):
                        self.leaks.append(line)


@dataclass
class Seen:
    """What the test could read while the job ran: process command lines and Redis contents."""

    cmdlines: set[tuple[int, bytes]] = field(default_factory=set)  # each pid's, as it changed
    environs: dict[int, bytes] = field(default_factory=dict)
    redis_chunks: list[bytes] = field(default_factory=list)
    redis_keys: set[bytes] = field(default_factory=set)

    def processes(self, root: int) -> None:
        for pid in [root, *descendants(root)]:
            try:
                self.cmdlines.add((pid, Path(f"/proc/{pid}/cmdline").read_bytes()))
                if pid != root:
                    self.environs[pid] = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue  # it ended between the listing and the read

    def redis(self, url: str) -> None:
        client = redis.Redis.from_url(url)
        try:
            for key in client.scan_iter(count=1000):
                self.redis_keys.add(key)
                self.redis_chunks.extend(_redis_contents(client, key))
        finally:
            client.close()


def test_a_job_run_at_debug_logging_writes_the_api_key_nowhere(
    orchestrator: Orchestrator,
    sandbox: SandboxServer,
    redis_url: str,
    database_url: str,
    tmp_path: Path,
) -> None:
    orchestrator.env["LEGITSMS_API_KEY"] = KEY
    data_dir = Path(orchestrator.env["ORCHESTRATOR_DATA_DIR"])
    if database_url.startswith("sqlite"):
        # The one-machine default: no DATABASE_URL, the SQLite file lives in the data folder.
        del orchestrator.env["DATABASE_URL"]
        database_url = f"sqlite:///{data_dir / 'orchestrator.db'}"
    job_file = write_job(tmp_path, JOB)
    export = tmp_path / "out.csv"
    stdout, stderr = tmp_path / "run.stdout", tmp_path / "run.stderr"

    with RedisMonitor(redis_url) as monitor:
        seen = _run_watching(orchestrator, sandbox, job_file, export, stdout, stderr, redis_url)
    seen.redis(redis_url)  # what is left once the run has ended

    # The key did reach the provider: every request was authenticated, orders were made.
    requests = sandbox.ledger.requests()
    assert requests, "the job talked to the simulator"
    assert not [r for r in requests if r[2] == 401], "no request was refused for its key"
    assert sandbox.ledger.orders(), "the key bought numbers"
    assert sandbox.ledger.snapshot(time.time())["faults"], "error paths ran too"
    with export.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == SLOTS
    assert any(row["code"] for row in rows), "some codes arrived"

    # The search finds the key where it belongs, in the workers' environment: it looks in
    # the right places, and an absence below means something.
    worker_pids = {pid for pid, line in seen.cmdlines if b"worker" in line}
    assert worker_pids, f"saw the worker processes: {seen.cmdlines}"
    assert any(KEY.encode() in seen.environs.get(pid, b"") for pid in worker_pids)

    logs = stderr.read_bytes()
    assert b"order_placed" in logs, "the workers' logs are in the run's output"
    _assert_absent("the run's stdout", stdout.read_bytes())
    _assert_absent("the run's stderr", logs)
    _assert_absent("the CSV", export.read_bytes())
    for pid, line in seen.cmdlines:
        _assert_absent(f"the command line of process {pid} ({line!r})", line)

    assert monitor.commands_in_db > 100, "the job's messages went through Redis"
    assert not monitor.leaks, f"the API key was sent to Redis: {monitor.leaks[:3]}"
    assert seen.redis_keys, "Redis held the job's messages and the rate limiter"
    for key in seen.redis_keys:
        _assert_absent(f"Redis key name {key!r}", key)
    for chunk in seen.redis_chunks:
        _assert_absent("a Redis value", chunk)

    tables = database_as_text(database_url)
    assert tables.get("activation", "").count("\n") == SLOTS - 1, tables.keys()
    for name, dump in tables.items():
        _assert_absent(f"database table {name}", dump.encode())
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    if database_url.startswith("sqlite"):
        assert data_dir / "orchestrator.db" in files
    assert export in files and stderr in files
    for path in files:  # the data folder (SQLite with its WAL), logs, CSV, job file
        _assert_absent(f"file {path}", path.read_bytes())


def _run_watching(
    orchestrator: Orchestrator,
    sandbox: SandboxServer,
    job_file: Path,
    export: Path,
    stdout: Path,
    stderr: Path,
    redis_url: str,
) -> Seen:
    """Run the job at debug logging; while it runs, record processes and Redis contents."""
    seen = Seen()
    argv = [*COMMAND, "--log-level", "debug", "run", str(job_file), "--export", str(export)]
    env = orchestrator.environ(ORCHESTRATOR_LOG_LEVEL="debug")
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=orchestrator.workdir, env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + RUN_TIMEOUT
            faults_on = False
            next_redis = 0.0
            while proc.poll() is None:
                assert time.monotonic() < deadline, f"run still going after {RUN_TIMEOUT}s"
                if not faults_on and _ordered(sandbox):
                    sandbox.simulator.config = FAULTY
                    faults_on = True
                seen.processes(proc.pid)
                if time.monotonic() >= next_redis:
                    seen.redis(redis_url)
                    next_redis = time.monotonic() + 1.0
                time.sleep(0.05)
        finally:
            _stop(proc, seen)
    assert proc.returncode in (0, 1, 3), stderr.read_text()  # ended: all, some or doubtful
    return seen


def _ordered(sandbox: SandboxServer) -> bool:
    return any(endpoint == "POST /order" for _, endpoint, _ in sandbox.ledger.requests())


def _stop(proc: subprocess.Popen[bytes], seen: Seen) -> None:
    """Interrupt a run that is still going (it stops its workers), then reap what is left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in {pid for pid, _ in seen.cmdlines} - {proc.pid}:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone, as it should be
        if (pid, cmdline) in seen.cmdlines:  # still our worker, not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _redis_contents(client: redis.Redis, key: bytes) -> list[bytes]:
    """One key's value in every form Redis hands out: its DUMP, and its members by type."""
    kind = client.type(key)
    reads: dict[bytes, object] = {
        b"string": lambda: client.get(key),
        b"list": lambda: client.lrange(key, 0, -1),
        b"hash": lambda: client.hgetall(key),
        b"set": lambda: client.smembers(key),
        b"zset": lambda: client.zrange(key, 0, -1),
        b"stream": lambda: client.xrange(key),
    }
    read = reads.get(kind) if isinstance(kind, bytes) else None
    # DUMP may be compressed, hence the typed read as well.
    values = [client.dump(key), read() if callable(read) else None]
    return list(_flatten(values))


def _flatten(value: object) -> Iterator[bytes]:
    """The bytes in a reply of nested lists, tuples, sets and dicts."""
    if isinstance(value, bytes):
        yield value
    elif isinstance(value, str):
        yield value.encode()
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _flatten(name)
            yield from _flatten(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _flatten(item)
    elif value is not None:
        yield repr(value).encode()


def _assert_absent(where: str, data: bytes) -> None:
    for needle in NEEDLES:
        assert needle not in data, f"the API key ({needle[:6]!r}...) appears in {where}"
