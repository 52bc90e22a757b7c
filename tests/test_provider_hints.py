"""A provider that cannot be reached, or refuses the key: the line names the URL and the
likely cause."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.errors import NotSent
from orchestrator.provider.client import LegitSMSClient
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, fast_env


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _orchestrator(tmp_path: Path, base_url: str, redis_url: str, **extra: str) -> Orchestrator:
    env = fast_env(base_url, redis_url, f"sqlite:///{tmp_path / 'o.db'}", tmp_path)
    return Orchestrator(workdir=tmp_path, env={**env, "ORCHESTRATOR_CLI_PATIENCE": "1s", **extra})


def test_a_sandbox_url_nobody_answers_asks_whether_the_sandbox_runs(
    tmp_path: Path, redis_url: str
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/v2"
    result = _orchestrator(tmp_path, url, redis_url).run("balance", timeout=60)

    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"could not connect to {url}" in line
    assert "is `orchestrator sandbox` running?" in line


def test_a_refused_key_names_the_setting_to_check_and_never_the_key(
    tmp_path: Path, redis_url: str, sandbox: SandboxServer
) -> None:
    key = "sk_live_not_the_sandboxes_key"
    result = _orchestrator(tmp_path, sandbox.url, redis_url, LEGITSMS_API_KEY=key).run("balance")

    assert result.returncode == ExitCode.UNAVAILABLE, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "invalid_key (401)" in line
    assert f"{sandbox.url}: check LEGITSMS_API_KEY" in line
    assert key not in result.stderr + result.stdout


def test_a_remote_provider_not_reached_points_at_the_base_url_and_the_network() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("name or service not known", request=request)

    client = LegitSMSClient(
        "https://user:secret@api.example.net/v2",
        "sk_live_x",
        transport=httpx.MockTransport(refuse),
        attempts=1,
    )
    with pytest.raises(NotSent) as caught:
        client.balance()

    message = str(caught.value)
    assert "could not connect to https://api.example.net/v2" in message
    assert "check LEGITSMS_BASE_URL and the network" in message
    assert "secret" not in message
