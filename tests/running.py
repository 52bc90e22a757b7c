"""A real ``orchestrator run`` in the background: its output, the processes under it, signals."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.sandbox.server import SandboxServer
from tests.support import COMMAND, Orchestrator


def descendants(root: int) -> list[int]:
    """Every live process below ``root``, from each process's parent in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name, in parentheses, may hold spaces; the parent pid follows the state.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def identity(pid: int) -> tuple[bytes, str] | None:
    """A process's command line and start time (a reused pid starts at another time)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return cmdline, stat.rsplit(")", 1)[1].split()[19]


def alive(pid: int, seen: tuple[bytes, str]) -> bool:
    """Whether ``pid`` is still the process seen (a zombie, or a reused pid, is not it).

    Only the start time is compared: valkey-server rewrites its command line once started.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and fields[19] == seen[1]


@dataclass
class Run:
    """One ``orchestrator run`` subprocess, in a session of its own as a terminal would start
    it, so ``interrupt`` can send Ctrl-C to its whole process group as the terminal does."""

    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    seen: dict[int, tuple[bytes, str]] = field(default_factory=dict)

    @classmethod
    def start(cls, orch: Orchestrator, *args: str, name: str = "run", **extra: str) -> Run:
        out, err = orch.workdir / f"{name}.stdout", orch.workdir / f"{name}.stderr"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [*COMMAND, "run", *args],
                cwd=orch.workdir,
                env=orch.environ(**extra),
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        return cls(proc, out, err)

    def look(self) -> None:
        """Remember every process under the run (to check later that none is left).

        A process seen again at the same start time is the same one: its command line is
        read again, since one seen between fork and exec still showed its parent's."""
        for pid in descendants(self.proc.pid):
            seen = identity(pid)
            if seen is not None and (pid not in self.seen or self.seen[pid][1] == seen[1]):
                self.seen[pid] = seen

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self.look()
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"run exited {self.proc.returncode} before {what}:\n{self.err()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout}s:\n{self.err()}")
            time.sleep(0.1)
        self.look()

    def interrupt(self) -> None:
        """Ctrl-C on a terminal: SIGINT to the foreground process group."""
        self.look()
        os.killpg(self.proc.pid, signal.SIGINT)

    def terminate(self) -> None:
        """A cron timeout or a shutdown: SIGTERM to the process."""
        self.look()
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit code; fails (and kills it) if the run is still going after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.look()
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"run still going after {timeout}s:\n{self.err()}")
            time.sleep(0.1)
        return self.proc.returncode

    def left_behind(self, grace: float = 5.0) -> dict[int, tuple[bytes, str]]:
        """Processes seen under the run that still run ``grace`` seconds after it ended."""
        deadline = time.monotonic() + grace
        while True:
            left = {pid: line for pid, line in self.seen.items() if alive(pid, line)}
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)

    def kill(self) -> None:
        """Clean up after a failed test: the run and everything seen under it."""
        self.look()
        for pid in [self.proc.pid, *self.seen]:
            with contextlib.suppress(ProcessLookupError):
                if pid == self.proc.pid or alive(pid, self.seen[pid]):
                    os.kill(pid, signal.SIGKILL)
        self.proc.wait()

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def out(self) -> str:
        return self.stdout.read_text(errors="replace")


def ledger(sandbox: SandboxServer) -> list[dict[str, object]]:
    """The simulator's orders as they stand now."""
    orders: list[dict[str, object]] = sandbox.ledger.snapshot(time.time())["orders"]
    return orders


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def valkey_pids(run: Run) -> list[int]:
    return [pid for pid, (line, _start) in run.seen.items() if b"valkey-server" in line]
