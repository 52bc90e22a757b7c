"""One slow answer no longer kills a cron submit (issue 10, item 8): the CLI's reads ride it out."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.sandbox.config import SandboxConfig
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, fast_env

SLOW_FIRST = """\
name: slow-first
targets:
  - service: Telegram
    country: 16
    quantity: 1
    max_price: 2.00
"""


@pytest.mark.slow
def test_a_submit_whose_first_read_answers_slower_than_read_timeout_still_submits(
    tmp_path: Path, sqlite_url: str, redis_url: str
) -> None:
    # With seed 12, the simulator's fault draws make only the first request (GET /services)
    # slow: it answers after 12 s, past the 11 s read timeout, longer than the 10 s the reads'
    # retries used to have in all.
    slow_first = SandboxConfig(seed=12, fault_slow=0.3, slow_seconds=12)
    with SandboxServer(slow_first, port=0) as server:
        env = fast_env(server.url, redis_url, sqlite_url, tmp_path)
        cli = Orchestrator(workdir=tmp_path, env={**env, "ORCHESTRATOR_READ_TIMEOUT": "11s"})
        job = tmp_path / "job.yaml"
        job.write_text(SLOW_FIRST)

        result = cli.run("submit", str(job), timeout=120)

        assert result.returncode == 0, result.stderr
        assert server.ledger.snapshot(time.time())["requests"]["GET /services"] == 2
        assert server.ledger.snapshot(time.time())["faults"] == {"slow": 1}
