"""``python -m bench``: the orchestrator against the naive script, on the same simulator settings.

    python -m bench [--scenario a|b|c|d|e|idle|all] [--quick] [--json FILE]

Each side of a scenario gets a simulator of its own with the same seed, so both meet the
same codes after the same delays, and its own API key, Redis and database. Sides run one
after the other, except where the scenario says CPU is not what it measures ((b), (d)): then side
by side, which halves a run that waits minutes on the provider.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.bound import lower_bound
from bench.codes import codes_scenario, run_codes
from bench.idle import idle_lines, idle_scenario, run_idle
from bench.infra import database_for_run, redis_for_run
from bench.latency_bound import best_latency
from bench.metrics import summarize
from bench.orchestrated import Deployment, run_orchestrator
from bench.processes import Environment
from bench.report import (
    MAX_CALLS,
    codes_table,
    growth_table,
    growth_targets,
    median_pair,
    pair_figures,
    paired_targets,
    print_pairs,
    print_targets,
    print_trace,
    scenario_table,
    scenario_targets,
)
from bench.run_baseline import run_baseline
from bench.scenarios import DEFAULT_THREADS, GROUPS, Scenario, scenarios
from orchestrator.logs import configure_logging
from orchestrator.sandbox.server import SandboxServer

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"
# (e), codes over countries, lives in bench/codes.py; (i), an idle worker, in bench/idle.py.
ALL_GROUPS = (*GROUPS, "e", "idle")
REPEAT_A = 3  # pairs of runs for (a): its verdicts are on the median of the pairs' ratios
# Wide enough for the tables when the output goes to a file or a pipe.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def _options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=[*ALL_GROUPS, "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="reduced sizes, for a smoke check")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"default {DEFAULT_JSON}")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--threads",
        type=int,
        help=f"threads per worker (default: the scenario's; 1 for (a), {DEFAULT_THREADS} for the "
        "others)",
    )
    parser.add_argument("--log-level", default="info", help="the orchestrator's (default info)")
    parser.add_argument(
        "--redis-url",
        help="use this Redis database, flushed first (default: a private server per run)",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="PostgreSQL server URL: each run gets a new database there (default SQLite)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="count the workers' steps and rate-limit refusals (bench.trace; for diagnosis)",
    )
    parser.add_argument(
        "--numbers", type=int, help="batch size of every run instead (experiments; c: one run)"
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra environment variable for the workers (experiments; repeatable)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help=f"runs of each side, alternating (default {REPEAT_A} for (a), whose CPU figures "
        "swing between runs on a shared machine; 1 for the others)",
    )
    parser.add_argument("--show", type=Path, metavar="FILE", help="print a saved report and exit")
    parser.add_argument("--keep", action="store_true", help="keep the runs' folders and logs")
    return parser.parse_args(argv)


def _pair(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--worker-env takes KEY=VALUE, got {item!r}")
    return key, value


def _orchestrator_side(
    scenario: Scenario, opts: argparse.Namespace, server: SandboxServer, folder: Path
) -> dict[str, Any]:
    with (
        redis_for_run(folder / "redis", opts.redis_url) as redis_url,
        database_for_run(folder, opts.postgres) as database_url,
    ):
        deployment = Deployment(
            redis_url=redis_url,
            database_url=database_url,
            workers=opts.workers,
            threads=opts.threads or scenario.threads,
            log_level=opts.log_level,
            trace=opts.trace,
            worker_env=tuple(_pair(item) for item in opts.worker_env),
        )
        environment = Environment()
        observed = run_orchestrator(scenario, deployment, base_url=server.url, workdir=folder)
    return {
        **summarize(observed, server.ledger, scenario.numbers),
        "environment": environment.report(),
    }


def _baseline_side(scenario: Scenario, server: SandboxServer, folder: Path) -> dict[str, Any]:
    environment = Environment()
    observed = run_baseline(scenario, base_url=server.url, workdir=folder)
    return {
        **summarize(observed, server.ledger, scenario.numbers),
        "environment": environment.report(),
    }


def run_scenario(scenario: Scenario, opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Both sides of one scenario, each on a simulator of its own; the figures of each."""
    folder = root / scenario.name
    how = "side by side" if scenario.concurrent else "one after the other"
    sides = "orchestrator and baseline " + how if scenario.baseline else "orchestrator"
    console.print(f"[bold]{scenario.title}[/]: running the {sides}")
    with SandboxServer(scenario.sandbox) as orch_server, SandboxServer(scenario.sandbox) as base:
        jobs: list[Callable[[], dict[str, Any]]] = [
            lambda: _orchestrator_side(scenario, opts, orch_server, folder / "orchestrator")
        ]
        if scenario.baseline:
            jobs.append(lambda: _baseline_side(scenario, base, folder / "baseline"))
        if scenario.concurrent:
            with ThreadPoolExecutor(len(jobs)) as pool:
                futures = [pool.submit(job) for job in jobs]
                results = [future.result() for future in futures]
        else:
            results = [job() for job in jobs]
    result: dict[str, Any] = {
        "name": scenario.name,
        "group": scenario.group,
        "title": scenario.title,
        "settings": scenario.settings(),
        "sides": {side["side"]: side for side in results},
    }
    if scenario.rate_limit > 0:
        result["lower_bound"] = asdict(lower_bound(scenario))
        best = best_latency(scenario, max_calls=MAX_CALLS.get(scenario.group))
        if best is not None:
            result["latency_bound"] = asdict(best)
    result["targets"] = scenario_targets(result)
    return result


def run_repeated(scenario: Scenario, opts: argparse.Namespace, root: Path) -> dict[str, Any]:
    """Run both sides ``--repeat`` times, alternating, so drift in the machine's speed falls
    on both; report the pair with the median CPU ratio, and judge on the median ratios."""
    count = opts.repeat or (REPEAT_A if scenario.group == "a" else 1)
    if count <= 1 or not scenario.baseline:
        return run_scenario(scenario, opts, root)
    pairs = [run_scenario(scenario, opts, root / f"pair-{i + 1}") for i in range(count)]
    shown = median_pair(pairs)
    shown["pairs"] = [pair_figures(pair) for pair in pairs]
    shown["targets"] = paired_targets(shown, pairs)
    return shown


def main(argv: list[str] | None = None) -> int:
    opts = _options(argv)
    if opts.show is not None:
        return show(opts.show)
    configure_logging("warning")  # this process's own log lines would break up the tables
    groups = ALL_GROUPS if opts.scenario == "all" else (opts.scenario,)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "command": command.strip(),
        "started_at": datetime.now(UTC).isoformat(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "options": {
            "quick": opts.quick,
            "workers": opts.workers,
            "threads": opts.threads,
            "log_level": opts.log_level,
            "trace": opts.trace,
            "numbers": opts.numbers,
            "repeat": opts.repeat,
            "worker_env": opts.worker_env,
            "database": "postgresql" if opts.postgres else "sqlite",
            "redis": "shared" if opts.redis_url else "private server",
        },
        "scenarios": [],
        "group_targets": {},
    }
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="legitsms-bench-"))
    try:
        for group in groups:
            if group == "e":
                runs = [run_codes(codes_scenario(quick=opts.quick, codes=opts.numbers), opts, root)]
            elif group == "idle":
                runs = [run_idle(idle_scenario(quick=opts.quick), opts, root)]
            else:
                chosen = scenarios(group, quick=opts.quick, numbers=opts.numbers)
                runs = [run_repeated(s, opts, root) for s in chosen]
            report["scenarios"] += runs
            if group == "c" and len(runs) > 1:
                report["group_targets"]["c"] = growth_targets(runs)
            _write(opts.json, report)  # after each group: a late failure keeps the rest
            show_group(group, runs, report["group_targets"].get(group, []))
    finally:
        if opts.keep:
            console.print(f"runs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    report["seconds"] = time.monotonic() - started
    _write(opts.json, report)
    console.print(f"wrote {opts.json}; reproduce with: {report['command']}")
    return 0


def show_group(group: str, runs: list[dict[str, Any]], targets: list[dict[str, Any]]) -> None:
    """Print one group's tables and the verdict on its targets."""
    if group == "c":
        console.print(growth_table("(c) the orchestrator as the batch grows", runs))
        print_targets(console, targets)
        return
    if group == "e":
        for run in runs:
            console.print(codes_table(run))
            print_targets(console, run["targets"])
        return
    if group == "idle":
        for run in runs:
            console.print("\n".join(idle_lines(run)), markup=False)
            print_targets(console, run["targets"])
        return
    for run in runs:
        console.print(scenario_table(run))
        print_pairs(console, run)
        print_targets(console, run["targets"])
        print_trace(console, run)


def show(path: Path) -> int:
    """Print the tables of a report written earlier."""
    report = json.loads(path.read_text())
    console.print(f"{report['command']}  ({report['started_at']})")
    for group in ALL_GROUPS:
        runs = [run for run in report["scenarios"] if run["group"] == group]
        if runs:
            show_group(group, runs, report["group_targets"].get(group, []))
    return 0


def _write(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
