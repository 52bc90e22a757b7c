"""The lifecycle's own CPU per number, without Dramatiq: ``python -m bench.steps``.

Scenario (a)'s figure swings with the machine (the script's own CPU per number moved
between 3.9 and 7.9 ms over one morning's runs), and it holds Dramatiq, idle consumers and
two processes sharing two cores. This one process runs only the steps a worker runs per
number, on real parts: the simulator over HTTP in a child process (its CPU is not counted),
a private Redis, an SQLite file. Each round plans a job of (a)'s numbers, buys them ten to a
message (as ``place_orders`` does), waits for the codes and polls them seven to a message (as
``check_codes`` does), and prints this process's CPU per number for each half. To compare
two commits, run it with ``PYTHONPATH`` set to each one's worktree, alternately.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import structlog

from bench.infra import database_for_run, redis_for_run
from bench.scenarios import COUNTRY_ID, MAX_PRICE, ORCHESTRATOR_KEY, SERVICE_ID, scenarios
from orchestrator.config import Settings
from orchestrator.db import store
from orchestrator.db.engine import transaction
from orchestrator.jobs.resolve import ResolvedJob, ResolvedTarget
from orchestrator.jobs.submit import job_plan
from orchestrator.lifecycle.purchase import Purchases, place
from orchestrator.lifecycle.runtime import Runtime
from orchestrator.lifecycle.settle import check_many
from orchestrator.lifecycle.wiring import make_runtime
from orchestrator.logs import configure_logging
from orchestrator.sandbox.server import SandboxServer

PLACE_BATCH = 10  # slots per place message (workers/actors.py packs up to this many)
CHECK_BATCH = 7  # slots per check message, about what (a) sees


def _serve(urls: multiprocessing.Queue[str]) -> None:
    with SandboxServer(scenarios("a", quick=False)[0].sandbox) as server:
        urls.put(server.url)
        while True:
            time.sleep(3600)


def _plan(rt: Runtime, numbers: int, code_timeout: float) -> list[int]:
    target = ResolvedTarget(
        index=0,
        service_id=SERVICE_ID,
        service_name="bench",
        countries=[(COUNTRY_ID, "bench")],
        quantity=numbers,
        max_price=Decimal(MAX_PRICE),
    )
    job = ResolvedJob(
        name="bench-steps", budget=None, code_timeout=code_timeout, schedule=None, targets=[target]
    )
    with transaction(rt.engine) as session:
        _, ids = store.create_job(session, job_plan(job), source="inline")
    return ids


def _round(url: str, folder: Path, numbers: int) -> tuple[float, float]:
    """One round on a fresh Redis and database: CPU ms per number to buy, and to poll."""
    scenario = scenarios("a", quick=False)[0]
    with redis_for_run(folder / "redis", None) as redis_url, database_for_run(folder, None) as db:
        settings = Settings(
            api_key=ORCHESTRATOR_KEY,
            base_url=url,
            database_url=db,
            data_dir=str(folder),
            rate_limit=0,
            poll_interval=scenario.poll_interval,
            cancel_min_age=scenario.sandbox.cancel_min_age,
            provider_expiry=scenario.sandbox.expiry,
        )
        rt = make_runtime(settings, redis_url)
        try:
            ids = _plan(rt, numbers, scenario.code_timeout)
            start = time.process_time()
            for first in range(0, numbers, PLACE_BATCH):
                batch = ids[first : first + PLACE_BATCH]
                purchases = Purchases(rt, batch)
                for activation_id in batch:
                    structlog.contextvars.clear_contextvars()
                    place(rt, activation_id, purchases=purchases)
                purchases.finish()
            bought = time.process_time()
            time.sleep(scenario.sandbox.code_delay[1] + 0.2)  # every code that comes has come
            polls_from = time.process_time()
            for first in range(0, numbers, CHECK_BATCH):
                structlog.contextvars.clear_contextvars()
                check_many(rt, ids[first : first + CHECK_BATCH])
            polled = time.process_time()
        finally:
            rt.client.close()
            rt.engine.dispose()
    per = 1000 / numbers
    return (bought - start) * per, (polled - polls_from) * per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    urls: multiprocessing.Queue[str] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(urls,), daemon=True)
    server.start()
    url = urls.get(timeout=30)
    # The workers' log format, to a sink: a log line's cost is part of a step's.
    with open(os.devnull, "w") as sink:
        os.dup2(sink.fileno(), 2)
    configure_logging("info", json=True)
    rounds: list[tuple[float, float]] = []
    try:
        for n in range(opts.rounds):
            with tempfile.TemporaryDirectory(prefix="bench-steps-") as folder:
                buy, poll = _round(url, Path(folder), opts.numbers)
            rounds.append((buy, poll))
            print(f"round {n + 1}: buy {buy:.2f}, poll {poll:.2f}, both {buy + poll:.2f}")
    finally:
        server.kill()
    print(
        f"CPU ms per number, median of {len(rounds)} rounds of {opts.numbers}: "
        f"buy {statistics.median(b for b, _ in rounds):.2f}, "
        f"poll {statistics.median(p for _, p in rounds):.2f}, "
        f"both {statistics.median(b + p for b, p in rounds):.2f}"
    )


if __name__ == "__main__":
    main()
