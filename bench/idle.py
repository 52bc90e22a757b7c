"""(i) What a worker burns with nothing to do, and how fast it wakes when work comes.

One real ``orchestrator worker`` at the installation's defaults (no ``--processes`` or
``--threads``) against a private Redis and the simulator runs one small job to its end; then
the CPU of its processes (children included) is counted over a minute of idleness. A second,
small job submitted after the idle minute shows what the quiet cost in wake-up time: from
``submit``'s exit (its nudges are in Redis by then) to each order reaching the simulator, and
each code's latency (from the moment it was due to the moment it was stored).
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.infra import database_for_run, redis_for_run
from bench.metrics import percentile
from bench.orchestrated import COMMAND, _job_id, _stored_codes, _wait_booted, _wait_for_job
from bench.processes import Measured, clean_environ
from bench.report import target
from bench.scenarios import ORCHESTRATOR_KEY, _env, _sandbox
from orchestrator.db.engine import create_tables, make_engine
from orchestrator.sandbox.ledger import Ledger
from orchestrator.sandbox.server import SandboxServer

_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_TARGET = 0.02  # share of one core, at most (issue 16)
SETTLE_SECONDS = 5.0  # after the job ended: its closing wallet checkpoint is still due
SLICE_SECONDS = 10.0  # the idle window is shown in slices, so a periodic spike stands out


@dataclass(frozen=True)
class IdleScenario:
    """The small jobs around the idle window, and how long the window lasts."""

    idle_seconds: float
    numbers: int = 5
    wake_numbers: int = 3
    poll_interval: float = 1.0
    code_timeout: float = 6.0

    @property
    def title(self) -> str:
        return (
            f"(i) an idle worker: default processes and threads, {self.idle_seconds:g} s with "
            f"nothing due after a {self.numbers}-number job"
        )

    def job_file(self, name: str, numbers: int) -> str:
        return (
            f"name: bench-idle-{name}\n"
            f"code_timeout: {self.code_timeout:g}s\n"
            "targets:\n"
            "  - service: 924\n"
            "    country: 6\n"
            f"    quantity: {numbers}\n"
            "    max_price: 0.50\n"
        )


def idle_scenario(*, quick: bool) -> IdleScenario:
    return IdleScenario(idle_seconds=20.0 if quick else 60.0)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and every descendant, living or reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), counted from the state at 0.
    total = sum(int(value) for value in fields[11:15]) / _TICKS
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(tree_cpu(int(child)) for child in children)
    return total


def run_idle(scenario: IdleScenario, opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Boot a worker, run a job to its end, count the idle CPU, then time a wake-up."""
    folder = root / "idle"
    folder.mkdir(parents=True, exist_ok=True)
    sandbox = _sandbox(
        seed=404, code_delay=(1.0, 3.0), never=0.2, rate=0, cancel_min_age=2, expiry=300
    )
    with (
        SandboxServer(sandbox) as server,
        redis_for_run(folder / "redis", opts.redis_url) as redis_url,
        database_for_run(folder, opts.postgres) as database_url,
    ):
        env = clean_environ(
            {
                "LEGITSMS_BASE_URL": server.url,
                "LEGITSMS_API_KEY": ORCHESTRATOR_KEY,
                "REDIS_URL": redis_url,
                "DATABASE_URL": database_url,
                "ORCHESTRATOR_DATA_DIR": str(folder / "data"),
                "ORCHESTRATOR_LOG_LEVEL": opts.log_level,
                **_env(rate=0, poll=scenario.poll_interval, cancel_min_age=2, expiry=300),
            }
        )
        engine = make_engine(database_url)
        create_tables(engine)
        worker = Measured(
            "worker", [*COMMAND, "worker"], env=env, cwd=folder, log=folder / "worker.log"
        )
        try:
            _wait_booted([worker], redis_url)
            first = _run_job(scenario, "first", scenario.numbers, env, folder, engine, worker)
            time.sleep(SETTLE_SECONDS)
            slices = _idle_slices(worker.pid, scenario.idle_seconds)
            wake = _run_job(scenario, "wake", scenario.wake_numbers, env, folder, engine, worker)
        finally:
            worker.stop()
            engine.dispose()
        return _figures(scenario, slices, first, wake, server.ledger)


def _idle_slices(pid: int, seconds: float) -> list[tuple[float, float]]:
    """(wall seconds, CPU seconds) of ``pid``'s process tree, slice by slice."""
    slices: list[tuple[float, float]] = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        began, cpu = time.monotonic(), tree_cpu(pid)
        time.sleep(min(SLICE_SECONDS, left))
        slices.append((time.monotonic() - began, tree_cpu(pid) - cpu))
    return slices


def _run_job(
    scenario: IdleScenario,
    name: str,
    numbers: int,
    env: dict[str, str],
    folder: Path,
    engine: Any,
    worker: Measured,
) -> dict[str, Any]:
    job_file = folder / f"job-{name}.yaml"
    job_file.write_text(scenario.job_file(name, numbers))
    submit = Measured(
        "submit", [*COMMAND, "submit", str(job_file)], env=env, cwd=folder, log=folder / name
    )
    if submit.wait(timeout=120).exit_code != 0:
        raise RuntimeError(f"submit failed: {submit.log.read_text()[-2000:]}")
    submitted = time.time()
    job_id = _job_id(submit.log.read_text())
    finished_at, timed_out = _wait_for_job(engine, job_id, [worker], 300)
    if timed_out:
        raise RuntimeError(f"job {name} did not end within 300 s")
    _codes, stored_at = _stored_codes(engine, job_id)
    return {
        "job_id": job_id,
        "submitted_at": submitted,
        "seconds": finished_at - submitted,
        "stored_at": stored_at,
    }


def _figures(
    scenario: IdleScenario,
    slices: list[tuple[float, float]],
    first: dict[str, Any],
    wake: dict[str, Any],
    ledger: Ledger,
) -> dict[str, Any]:
    wall = sum(w for w, _ in slices)
    cpu = sum(c for _, c in slices)
    # Orders bought after the wake job was submitted are that job's, in the order placed.
    woken = [o for o in ledger.orders() if o.created_at >= wake["submitted_at"]]
    to_order = [o.created_at - wake["submitted_at"] for o in woken]
    latency = [
        wake["stored_at"][o.order_id] - o.code_due_at
        for o in woken
        if o.code_due_at is not None and o.order_id in wake["stored_at"]
    ]
    share = cpu / wall if wall else 0.0
    return {
        "name": "idle",
        "group": "idle",
        "title": scenario.title,
        "settings": {
            "idle_seconds": scenario.idle_seconds,
            "numbers": scenario.numbers,
            "wake_numbers": scenario.wake_numbers,
            "poll_interval": scenario.poll_interval,
            "code_timeout": scenario.code_timeout,
        },
        "first_job_seconds": first["seconds"],
        "idle_wall_seconds": wall,
        "idle_cpu_seconds": cpu,
        "idle_core_share": share,
        "idle_slices_cpu_ms": [round(1000 * c, 1) for _, c in slices],
        "wake_job_seconds": wake["seconds"],
        "wake_to_first_order_seconds": min(to_order, default=None),
        "wake_to_last_order_seconds": max(to_order, default=None),
        "wake_code_latency_seconds": sorted(round(x, 3) for x in latency),
        "wake_code_latency_p50": percentile(latency, 50),
        "targets": [
            target(
                f"idle worker at most {IDLE_TARGET:.0%} of a core",
                share <= IDLE_TARGET,
                f"{share:.2%} ({1000 * cpu:.0f} CPU ms over {wall:.0f} s)",
            )
        ],
    }


def idle_lines(run: dict[str, Any]) -> list[str]:
    """The report of one idle run, as lines of plain text."""

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f} s"

    latencies = ", ".join(f"{x:.2f}" for x in run["wake_code_latency_seconds"]) or "-"
    return [
        run["title"],
        f"  first job ({run['settings']['numbers']} numbers) ended after "
        f"{run['first_job_seconds']:.1f} s",
        f"  idle: {1000 * run['idle_cpu_seconds']:.0f} CPU ms over "
        f"{run['idle_wall_seconds']:.1f} s = {run['idle_core_share']:.2%} of a core",
        f"  CPU ms per {SLICE_SECONDS:g} s slice: "
        + ", ".join(f"{ms:g}" for ms in run["idle_slices_cpu_ms"]),
        f"  wake job ({run['settings']['wake_numbers']} numbers): first / last order "
        f"{secs(run['wake_to_first_order_seconds'])} / {secs(run['wake_to_last_order_seconds'])}"
        f" after submit returned; ended after {run['wake_job_seconds']:.1f} s",
        f"  wake job code latency (s, poll every {run['settings']['poll_interval']:g} s): "
        + latencies,
    ]
