"""Run the naive script (``bench.baseline``) in a process of its own, measured like the workers."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench.metrics import Observed
from bench.processes import Measured, clean_environ
from bench.scenarios import BASELINE_KEY, COUNTRY_ID, SERVICE_ID, Scenario

REPO = Path(__file__).resolve().parent.parent


def run_baseline(scenario: Scenario, *, base_url: str, workdir: Path) -> Observed:
    """Run the script on the scenario's batch; return what it stored and used."""
    workdir.mkdir(parents=True, exist_ok=True)
    settings, result = workdir / "baseline-settings.json", workdir / "baseline-result.json"
    settings.write_text(
        json.dumps(
            {
                "base_url": base_url,
                "service": SERVICE_ID,
                "country": COUNTRY_ID,
                "count": scenario.numbers,
                "poll_interval": scenario.poll_interval,
                "timeout": scenario.code_timeout,
            }
        )
    )
    started_at = time.time()
    proc = Measured(
        "baseline",
        [sys.executable, "-m", "bench.baseline", str(settings), str(result)],
        env=clean_environ({"LEGITSMS_API_KEY": BASELINE_KEY, "PYTHONPATH": str(REPO)}),
        cwd=REPO,
        log=workdir / "baseline.log",
    )
    usage = proc.wait(timeout=scenario.time_limit)
    if usage.exit_code != 0 or not result.exists():
        raise RuntimeError(f"the baseline failed: {proc.log.read_text()[-2000:]}")
    found = json.loads(result.read_text())
    return Observed(
        side="baseline",
        started_at=started_at,
        finished_at=float(found["finished_at"]),
        codes=found["codes"],
        stored_at=found["stored_at"],
        usage=[usage],
        notes={
            "cancelled": found["cancelled"],
            "failed": len(found["failed"]),
            "failures": found["failed"][:5],
            "script_work_cpu_seconds": found["work_cpu_seconds"],
        },
    )
