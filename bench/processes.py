"""Child processes whose CPU time and peak memory are measured exactly, one process at a time.

Each child is reaped with ``os.wait4``, which returns that process's own ``rusage``: user +
system CPU seconds and ``ru_maxrss`` (the peak resident set, Linux's VmHWM, in KiB). While
it runs, ``/proc/<pid>/stat`` gives its CPU so far, so a long-lived worker's boot can be told
apart from the work it did for the batch.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
# Settings of the user's shell must not leak into a benchmarked process.
_SCRUBBED = ("LEGITSMS_", "ORCHESTRATOR_", "REDIS_URL", "DATABASE_URL")


@dataclass(frozen=True)
class Usage:
    """What one process used over its life, and over the batch (from ``mark`` to its end)."""

    role: str
    pid: int
    cpu_seconds: float
    batch_cpu_seconds: float
    peak_rss_mb: float
    exit_code: int


def clean_environ(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without orchestrator settings, plus ``extra``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    return {**base, **extra}


class Measured:
    """One child process: started at once, its output in ``log``, reaped by ``wait``."""

    def __init__(
        self, role: str, argv: list[str], *, env: dict[str, str], cwd: Path, log: Path
    ) -> None:
        self.role = role
        self.log = log
        with log.open("ab") as out:
            self._proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=out)
        self.pid = self._proc.pid
        self._mark = 0.0
        self._usage: Usage | None = None

    def cpu_now(self) -> float:
        """CPU seconds (user + system) used so far; 0 once the process is gone."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return 0.0
        fields = stat.rsplit(")", 1)[1].split()
        # Fields 14 and 15 of proc(5), counted from the state (field 3) at index 0.
        return (int(fields[11]) + int(fields[12])) / _TICKS

    def mark(self) -> None:
        """Start counting the batch's CPU from here (a worker's boot is not the batch's)."""
        self._mark = self.cpu_now()

    def running(self) -> bool:
        """Whether it still runs; leaves an exited process unreaped so ``wait`` can measure it."""
        if self._usage is not None:
            return False
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, self.pid, flags) is None

    def signal(self, signum: int) -> None:
        if self.running():
            os.kill(self.pid, signum)

    def wait(self, timeout: float | None = None) -> Usage:
        """Reap it (killing it after ``timeout``) and return what it used."""
        if self._usage is not None:
            return self._usage
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                pid, status, rusage = os.wait4(self.pid, 0)
                break
            time.sleep(0.05)
        code = os.waitstatus_to_exitcode(status)
        self._proc.returncode = code  # reaped here; Popen must not wait for it again
        cpu = rusage.ru_utime + rusage.ru_stime
        self._usage = Usage(
            role=self.role,
            pid=self.pid,
            cpu_seconds=cpu,
            batch_cpu_seconds=cpu - self._mark,
            peak_rss_mb=rusage.ru_maxrss / 1024,
            exit_code=code,
        )
        return self._usage

    def stop(self, timeout: float = 30.0) -> Usage:
        """SIGTERM, then wait (SIGKILL after ``timeout``)."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


class Environment:
    """What else the machine did while a side ran: every process's CPU, and this one's.

    This process serves the simulator, so its CPU is the provider's cost; the machine's
    busy cores include anything else running there (other people's tests, say).
    """

    def __init__(self) -> None:
        self._machine = machine_jiffies()
        self._own = _own_cpu()
        self._at = time.monotonic()

    def report(self) -> dict[str, float]:
        busy, total = machine_jiffies()
        seconds = time.monotonic() - self._at
        cores = os.cpu_count() or 1
        return {
            "seconds": seconds,
            "machine_busy_cores": cores
            * (busy - self._machine[0])
            / max(1, total - self._machine[1]),
            "simulator_cpu_seconds": _own_cpu() - self._own,
        }


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
