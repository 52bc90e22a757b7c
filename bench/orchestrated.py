"""Run the real thing: ``orchestrator worker`` processes and ``orchestrator submit``, over HTTP.

Workers are started first and left to boot (they are long-lived services), then the job is
submitted; the batch runs from the moment ``submit`` is launched until the database says the
job has ended. Each process is reaped with its own CPU time and peak memory.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from sqlmodel import select

from bench.metrics import Observed
from bench.processes import Measured, Usage, clean_environ
from bench.scenarios import ORCHESTRATOR_KEY, Scenario
from orchestrator.cli.watch import read_progress
from orchestrator.db.engine import create_tables, make_engine, transaction
from orchestrator.db.models import Activation, Job, JobStatus
from workers import NAMESPACE

COMMAND = [sys.executable, "-m", "orchestrator"]
# Dramatiq's Redis broker records each worker process here.
HEARTBEATS = f"{NAMESPACE}:__heartbeats__"
REPO = Path(__file__).resolve().parent.parent
BOOT_TIMEOUT = 60.0
SETTLE_SECONDS = 3.0
IDLE_WINDOW = 5.0  # seconds of idle workers measured before the batch


@dataclass(frozen=True)
class Deployment:
    """How the orchestrator is run: processes, threads, where its state lives."""

    redis_url: str
    database_url: str
    workers: int = 2
    threads: int = 8
    log_level: str = "info"
    trace: bool = False  # run workers under bench.trace, which counts steps and acquires
    worker_env: tuple[tuple[str, str], ...] = ()  # extra variables for the workers only


# Given the codes stored so far, the next job file to submit, or None: done.
NextJob = Callable[[int], str | None]
MAX_ROUNDS = 50  # jobs submitted in turn by one run, at most


def run_orchestrator(
    scenario: Scenario,
    deployment: Deployment,
    *,
    base_url: str,
    workdir: Path,
    next_job: NextJob | None = None,
) -> Observed:
    """Work the scenario's batch with real workers; return what they stored and used.

    ``next_job`` submits jobs in turn on the same workers, each once the one before ended
    (the user running the job again for its shortfall); by default the scenario's one job.
    """
    if next_job is None:
        next_job = _once(scenario.job_file())
    workdir.mkdir(parents=True, exist_ok=True)
    env = clean_environ(
        {
            "LEGITSMS_BASE_URL": base_url,
            "LEGITSMS_API_KEY": ORCHESTRATOR_KEY,  # in the environment, never in argv
            "REDIS_URL": deployment.redis_url,
            "DATABASE_URL": deployment.database_url,
            "ORCHESTRATOR_DATA_DIR": str(workdir / "data"),
            "ORCHESTRATOR_LOG_LEVEL": deployment.log_level,
            **scenario.orchestrator_env,
        }
    )
    # Created here, before the workers race to create them in the same file.
    engine = make_engine(deployment.database_url)
    create_tables(engine)

    worker_command = COMMAND
    trace_dir = workdir / "trace"
    if deployment.trace:
        trace_dir.mkdir(exist_ok=True)
        worker_command = [sys.executable, "-m", "bench.trace"]
        env = {**env, "BENCH_TRACE_DIR": str(trace_dir), "PYTHONPATH": str(REPO)}
    worker_env = {**env, **dict(deployment.worker_env)}
    workers = [
        Measured(
            f"worker-{i + 1}",
            [*worker_command, "worker", "--processes", "1", "--threads", str(deployment.threads)],
            env=worker_env,
            cwd=workdir,
            log=workdir / f"worker-{i + 1}.log",
        )
        for i in range(deployment.workers)
    ]
    usage: list[Usage] = []
    started_at = time.time()
    notes: dict[str, Any] = {"workers": deployment.workers, "threads": deployment.threads}
    try:
        _wait_booted(workers, deployment.redis_url)
        notes["worker_boot_cpu_seconds"] = [round(w.cpu_now(), 3) for w in workers]
        # What idle workers burn (their consumers poll Redis), to tell it from the batch's work.
        idle_from = [w.cpu_now() for w in workers]
        time.sleep(IDLE_WINDOW)
        idle = [w.cpu_now() - before for w, before in zip(workers, idle_from, strict=True)]
        notes["worker_idle_cpu_per_second"] = sum(idle) / IDLE_WINDOW
        for worker in workers:
            worker.mark()
        started_at = time.time()
        codes: dict[str, str] = {}
        stored_at: dict[str, float] = {}
        rounds: list[dict[str, Any]] = []
        finished_at, timed_out = started_at, False
        while len(rounds) < MAX_ROUNDS and (text := next_job(len(codes))) is not None:
            job_file = workdir / f"job-{len(rounds) + 1}.yaml"
            job_file.write_text(text)
            submit = Measured(
                "submit",
                [*COMMAND, "submit", str(job_file)],
                env=env,
                cwd=workdir,
                log=workdir / f"submit-{len(rounds) + 1}.log",
            )
            submitted_at = time.time()
            usage.append(submit.wait(timeout=300))
            if usage[-1].exit_code != 0:
                raise RuntimeError(f"submit failed: {submit.log.read_text()[-2000:]}")
            job_id = _job_id(submit.log.read_text())
            limit = scenario.time_limit - (time.time() - started_at)
            finished_at, timed_out = _wait_for_job(engine, job_id, workers, limit)
            progress = read_progress(engine, job_id)
            job_codes, job_stored_at = _stored_codes(engine, job_id)
            codes.update(job_codes)
            stored_at.update(job_stored_at)
            rounds.append(
                {
                    "job_id": job_id,
                    "submitted_after_seconds": submitted_at - started_at,
                    "finished_after_seconds": finished_at - started_at,
                    "codes": len(job_codes),
                    "final_states": {s.value: n for s, n in progress.counts.items() if n},
                }
            )
            if timed_out:
                break
        notes["timed_out"] = timed_out
        notes["final_states"] = rounds[-1]["final_states"] if rounds else {}
        notes["rounds"] = rounds
    finally:
        for worker in workers:
            worker.signal(signal.SIGTERM)  # all at once: they shut down side by side
        usage += [worker.wait(timeout=30) for worker in workers]
        notes["worker_seconds"] = time.time() - started_at
    if deployment.trace:
        notes["trace"] = _read_trace(trace_dir)
    engine.dispose()
    return Observed(
        side="orchestrator",
        started_at=started_at,
        finished_at=finished_at,
        codes=codes,
        stored_at=stored_at,
        usage=usage,
        notes=notes,
    )


def _once(text: str) -> NextJob:
    """The job file ``text``, submitted once."""
    sent: list[str] = []

    def next_job(codes: int) -> str | None:
        if sent:
            return None
        sent.append(text)
        return text

    return next_job


def _wait_booted(workers: list[Measured], redis_url: str) -> None:
    """Wait until every worker has fetched from the broker once (its heartbeat is in Redis)."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + BOOT_TIMEOUT
    try:
        while client.zcard(HEARTBEATS) < len(workers):
            for worker in workers:
                if not worker.running():
                    raise RuntimeError(f"{worker.role} exited: {worker.log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not up after {BOOT_TIMEOUT:g}s")
            time.sleep(0.1)
    finally:
        client.close()
    # Let the consumers settle, and the first periodic sweep (about 1 s after boot) run.
    time.sleep(SETTLE_SECONDS)


def _job_id(output: str) -> int:
    for line in output.splitlines():
        words = line.split()
        if words[:2] == ["submitted", "job"] and words[2].isdigit():
            return int(words[2])
    raise RuntimeError(f"no job id in submit's output: {output[-2000:]}")


def _wait_for_job(
    engine: Any, job_id: int, workers: list[Measured], limit: float
) -> tuple[float, bool]:
    """Poll the database until the job ends; returns (when it ended, whether we gave up)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with transaction(engine) as session:
            job = session.get(Job, job_id)
            assert job is not None
            if job.status is not JobStatus.ACTIVE:
                assert job.finished_at is not None
                return job.finished_at.timestamp(), False
        if not all(worker.running() for worker in workers):
            raise RuntimeError("a worker died during the run")
        time.sleep(0.5)
    return time.time(), True


def _stored_codes(engine: Any, job_id: int) -> tuple[dict[str, str], dict[str, float]]:
    codes: dict[str, str] = {}
    stored_at: dict[str, float] = {}
    with transaction(engine) as session:
        for act in session.exec(select(Activation).where(Activation.job_id == job_id)):
            if act.order_id and act.code is not None and act.code_at is not None:
                codes[act.order_id] = act.code
                stored_at[act.order_id] = act.code_at.timestamp()
    return codes, stored_at


def _read_trace(folder: Path) -> dict[str, dict[str, float]]:
    """The workers' counters and CPU seconds from bench.trace, summed over processes."""
    total: dict[str, dict[str, float]] = {"counts": {}, "cpu_seconds": {}, "wall_seconds": {}}
    for path in sorted(folder.glob("*.json")):
        for part, values in json.loads(path.read_text()).items():
            for key, value in values.items():
                total[part][key] = total[part].get(key, 0) + value
    return total
