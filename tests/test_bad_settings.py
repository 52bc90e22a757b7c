"""Bad settings, arguments and job files stop the real CLI: the documented exit code, one line.

Each case is one command as a user or cron would type it. Whatever the mistake, the command
ends with its documented code (2: bad input; 5: a service that cannot be used), writes exactly
one ``error:`` line naming what is wrong (the setting, and the environment or the file it came
from), and never a traceback (which exits 1: "some numbers got no code" to cron).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import typer

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.sandbox.config import DEMO_API_KEY
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator

VALID_JOB = """\
name: nightly
budget: 10.00
targets:
  - service: Telegram
    country: United Kingdom
    quantity: 2
    max_price: 2.00
"""
BAD, GONE = ExitCode.BAD_INPUT, ExitCode.UNAVAILABLE


def _job(quantity: str) -> bytes:
    return VALID_JOB.replace("quantity: 2", f"quantity: {quantity}").encode()


@dataclass(frozen=True)
class Case:
    """One command with one mistake, what it must exit with, and what its line must say.

    ``args`` and ``env`` values may hold ``{tmp}`` (the test's folder) and ``{stub}`` (a
    provider whose /prices lists one negative price); an ``env`` value of None unsets it.
    """

    args: tuple[str, ...]
    code: ExitCode
    says: tuple[str, ...]
    env: Mapping[str, str | None] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)
    read_only: str | None = None  # a folder (under {tmp}) the command may not write in
    timeout: float = 30.0


KEY_ENV = "LEGITSMS_API_KEY"
CASES = {
    "config file that is not UTF-8": Case(
        ("--config", "{tmp}/c.yaml", "balance"),
        BAD,
        ("{tmp}/c.yaml", "UTF-8"),
        files={"c.yaml": b"\xff\xfe"},
    ),
    "REDIS_URL that is not a URL": Case(
        ("balance",),
        BAD,
        ("environment variable REDIS_URL", "redis://"),
        env={"REDIS_URL": "notaurl"},
    ),
    "REDIS_URL of another scheme": Case(
        ("balance",),
        BAD,
        ("environment variable REDIS_URL", "'http'"),
        env={"REDIS_URL": "http://127.0.0.1:6379/0"},
    ),
    "REDIS_URL with a bad port": Case(
        ("balance",),
        BAD,
        ("environment variable REDIS_URL", "port"),
        env={"REDIS_URL": "redis://127.0.0.1:6379:6379/0"},
    ),
    "ORCHESTRATOR_FUNDS_PAUSE of zero": Case(
        ("status",),
        BAD,
        ("environment variable ORCHESTRATOR_FUNDS_PAUSE", "positive duration"),
        env={"ORCHESTRATOR_FUNDS_PAUSE": "0s"},
    ),
    "ORCHESTRATOR_MIN_BALANCE that is negative": Case(
        ("status",),
        BAD,
        ("environment variable ORCHESTRATOR_MIN_BALANCE", "greater than or equal to 0"),
        env={"ORCHESTRATOR_MIN_BALANCE": "-1"},
    ),
    "min_balance in the file that is not money": Case(
        ("--config", "{tmp}/c.yaml", "status"),
        BAD,
        ("{tmp}/c.yaml: min_balance",),
        files={"c.yaml": b"min_balance: lots\n"},
    ),
    "DATABASE_URL with two ports": Case(
        ("status",),
        BAD,
        ("environment variable DATABASE_URL", "port"),
        env={"DATABASE_URL": "postgresql+psycopg://u:pw@127.0.0.1:5432:5432/x"},
    ),
    "DATABASE_URL of an unsupported database": Case(
        ("status",),
        BAD,
        ("environment variable DATABASE_URL", "'mysql'", "sqlite or postgresql"),
        env={"DATABASE_URL": "mysql://u@h/d"},
    ),
    "DATABASE_URL that is not a URL": Case(
        ("status",), BAD, ("environment variable DATABASE_URL",), env={"DATABASE_URL": "notaurl"}
    ),
    "database_url in the file, with a bad port": Case(
        ("--config", "{tmp}/c.yaml", "status"),
        BAD,
        ("{tmp}/c.yaml: database_url", "port"),
        files={"c.yaml": b"database_url: postgresql://u@127.0.0.1:notaport/x\n"},
        env={"DATABASE_URL": None},
    ),
    "read-only data folder: status": Case(
        ("status",),
        GONE,
        ("{tmp}/ro",),
        env={"DATABASE_URL": None, "ORCHESTRATOR_DATA_DIR": "{tmp}/ro"},
        read_only="ro",
    ),
    "data folder in a read-only folder: status": Case(
        ("status",),
        GONE,
        ("{tmp}/ro/data",),
        env={"DATABASE_URL": None, "ORCHESTRATOR_DATA_DIR": "{tmp}/ro/data"},
        read_only="ro",
    ),
    "read-only data folder: run with the embedded broker": Case(
        ("run", "{tmp}/job.yaml", "--workers", "0"),
        GONE,
        ("{tmp}/ro",),
        env={"REDIS_URL": None, "ORCHESTRATOR_DATA_DIR": "{tmp}/ro"},
        files={"job.yaml": VALID_JOB.encode()},
        read_only="ro",
    ),
    "API key that is not ASCII": Case(
        ("balance",), BAD, (f"environment variable {KEY_ENV}", "ASCII"), env={KEY_ENV: "k\u00e9"}
    ),
    "API key with a trailing newline": Case(
        ("balance",),
        BAD,
        (f"environment variable {KEY_ENV}", "contains a newline"),
        env={KEY_ENV: DEMO_API_KEY + "\n"},
    ),
    "API key with a space": Case(
        ("balance",),
        BAD,
        (f"environment variable {KEY_ENV}", "contains a space"),
        env={KEY_ENV: "sk_test sandbox"},
    ),
    "base_url that is not a URL": Case(
        ("--config", "{tmp}/c.yaml", "balance"),
        BAD,
        ("{tmp}/c.yaml: base_url", "http"),
        files={"c.yaml": b"base_url: not a url\n"},
        env={"LEGITSMS_BASE_URL": None},
    ),
    "base_url of another scheme": Case(
        ("balance",),
        BAD,
        ("environment variable LEGITSMS_BASE_URL", "'ftp'"),
        env={"LEGITSMS_BASE_URL": "ftp://legitsms.com/v2"},
    ),
    "rate_limit too small to mean anything": Case(
        ("balance",),
        BAD,
        ("environment variable ORCHESTRATOR_RATE_LIMIT", "0.001"),
        env={"ORCHESTRATOR_RATE_LIMIT": "1e-300"},
    ),
    "a breaker that opens after no failure": Case(
        ("balance",),
        BAD,
        ("environment variable ORCHESTRATOR_BREAKER_FAILURES", "greater than or equal to 1"),
        env={"ORCHESTRATOR_BREAKER_FAILURES": "0"},
    ),
    "a breaker cool-down that is not a duration": Case(
        ("balance",),
        BAD,
        ("environment variable ORCHESTRATOR_BREAKER_COOLDOWN", "'soon'"),
        env={"ORCHESTRATOR_BREAKER_COOLDOWN": "soon"},
    ),
    "log level setting that is not one": Case(
        ("balance",),
        BAD,
        ("environment variable ORCHESTRATOR_LOG_LEVEL", "debug, info, warning or error"),
        env={"ORCHESTRATOR_LOG_LEVEL": "verbose"},
    ),
    "--log-level that is not one": Case(
        ("--log-level", "verbose", "balance"), BAD, ("--log-level", "'verbose'")
    ),
    "--workers -1": Case(
        ("run", "{tmp}/job.yaml", "--workers", "-1"),
        BAD,
        ("--workers", "-1"),
        files={"job.yaml": VALID_JOB.encode()},
    ),
    "--processes 0": Case(("worker", "--processes", "0"), BAD, ("--processes", "0")),
    "--threads 0": Case(("worker", "--threads", "0"), BAD, ("--threads", "0")),
    "quantity of 1e20": Case(
        ("submit", "{tmp}/job.yaml"),
        BAD,
        ("{tmp}/job.yaml: targets[0].quantity", "max_numbers_per_job"),
        files={"job.yaml": _job("100000000000000000000")},
    ),
    "quantity above max_numbers_per_job": Case(
        ("submit", "{tmp}/job.yaml"),
        BAD,
        ("{tmp}/job.yaml: targets[0].quantity", "10000", "max_numbers_per_job"),
        files={"job.yaml": _job("1000000")},
        timeout=15.0,
    ),
    "targets together above max_numbers_per_job": Case(
        ("submit", "{tmp}/job.yaml"),
        BAD,
        ("{tmp}/job.yaml: targets", "10001", "max_numbers_per_job"),
        files={
            "job.yaml": (VALID_JOB + VALID_JOB.split("targets:\n")[1])
            .replace("quantity: 2", "quantity: 5000", 1)
            .replace("quantity: 2", "quantity: 5001")
            .encode()
        },
    ),
    "job file /dev/zero": Case(
        ("submit", "/dev/zero"), BAD, ("/dev/zero", "max_job_file_bytes"), timeout=15.0
    ),
    "job file larger than max_job_file_bytes": Case(
        ("submit", "{tmp}/job.yaml"),
        BAD,
        ("{tmp}/job.yaml", "max_job_file_bytes"),
        files={"job.yaml": VALID_JOB.encode() + b"#" * 100 + b"\n" * 2_000_000},
        timeout=15.0,
    ),
    # Reached, and answered: "could not be reached" would send the user after the network.
    # (The CLI re-reads an unusable answer for its patience, a minute unless set, first.)
    "one negative price in /prices": Case(
        ("prices", "Telegram"),
        GONE,
        ("the provider answered something unusable", "cost"),
        env={"LEGITSMS_BASE_URL": "{stub}", "ORCHESTRATOR_CLI_PATIENCE": "3s"},
    ),
}


@pytest.fixture(scope="module")
def stub_provider() -> Iterator[str]:
    """A provider whose /prices answer lists one country at a negative price."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path.endswith("/services"):
                body: object = {
                    "status": "success",
                    "services": [{"id": "1003", "name": "Telegram"}],
                }
            elif path.endswith("/prices"):
                rows = {
                    "16": {
                        "country": "United Kingdom",
                        "id": 16,
                        "cost": 1.2,
                        "count": 9,
                        "rate": 50,
                    },
                    "1": {
                        "country": "United States",
                        "id": 1,
                        "cost": -0.5,
                        "count": 9,
                        "rate": 50,
                    },
                }
                body = {"status": "success", "prices": rows}
            else:
                body = {"balance": "50.00", "currency": "USD"}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/wp-json/legitsms/v2"
    server.shutdown()
    server.server_close()


def _without_write_permission() -> list[str]:
    """A prefix that runs a command unable to write where its mode forbids it, even as root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_bad_setting_or_argument_exits_with_its_code_and_one_line(
    case: Case,
    tmp_path: Path,
    sandbox: SandboxServer,
    redis_url: str,
    stub_provider: str,
) -> None:
    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{stub}", stub_provider)

    for name, content in case.files.items():
        (tmp_path / name).write_bytes(content)
    cli = Orchestrator(
        workdir=tmp_path,
        env={
            "LEGITSMS_BASE_URL": sandbox.url,
            "LEGITSMS_API_KEY": DEMO_API_KEY,
            "REDIS_URL": redis_url,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'orchestrator.db'}",
            "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data"),
            "ORCHESTRATOR_RATE_LIMIT": "0",
        },
    )
    env = cli.environ(**{k: fill(v) for k, v in case.env.items() if v is not None})
    for name in [k for k, v in case.env.items() if v is None]:
        env.pop(name, None)
    prefix: list[str] = []
    if case.read_only is not None:
        folder = tmp_path / case.read_only
        folder.mkdir()
        folder.chmod(0o555)
        prefix = _without_write_permission()
    from tests.support import COMMAND

    started = time.monotonic()
    try:
        result = subprocess.run(
            [*prefix, *COMMAND, *(fill(arg) for arg in case.args)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=case.timeout,
            check=False,
        )
    finally:
        if case.read_only is not None:
            (tmp_path / case.read_only).chmod(0o755)
    took = time.monotonic() - started

    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == case.code, (result.returncode, output)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in case.says:
        assert fill(fragment) in lines[0], lines[0]
    assert DEMO_API_KEY not in output  # a refused key is never echoed
    assert took < case.timeout


def test_an_unusable_answer_is_not_called_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli.common import guard
    from orchestrator.errors import MalformedResponse, NotSent

    for raised, says in [
        (MalformedResponse("/prices: bad price entry"), "the provider answered something unusable"),
        (NotSent("connection refused"), "the provider could not be reached"),
    ]:
        with pytest.raises(typer.Exit) as caught, guard():
            raise raised
        assert caught.value.exit_code == ExitCode.UNAVAILABLE
        assert capsys.readouterr().err.strip() == f"error: {says}: {raised}"
