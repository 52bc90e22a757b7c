"""Settings: the example file, precedence, durations, the hidden key and `orchestrator config`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from pydantic import SecretStr
from typer.testing import CliRunner

from orchestrator.cli.app import app as orchestrator_app
from orchestrator.cli.config_view import config_command
from orchestrator.config import CONFIG_ENV, Settings, load_settings
from orchestrator.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.yaml"
VARIABLES = [str(field.validation_alias) for field in Settings.model_fields.values()]
SECRET = "sk_live_do_not_print_me"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting comes from the machine's environment or a ./config.yaml lying around."""
    for variable in [*VARIABLES, CONFIG_ENV]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_file_gives_the_same_settings_as_no_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(ROOT)
    assert load_settings(Path("config.example.yaml")) == Settings()


def test_the_example_file_documents_every_setting_and_its_environment_variable() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for name, field in Settings.model_fields.items():
        assert re.search(rf"^#? ?{name}:", text, re.MULTILINE), f"{name} has no example line"
        assert f"env {field.validation_alias}" in text, f"{name}'s variable is not named"


def test_the_environment_wins_over_the_file_which_wins_over_the_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings_file = _write(tmp_path / "settings.yaml", "poll_interval: 7s\nworker_threads: 3\n")
    monkeypatch.setenv("ORCHESTRATOR_POLL_INTERVAL", "9")

    settings = load_settings(settings_file)

    assert settings.poll_interval == 9.0  # environment over file
    assert settings.worker_threads == 3  # file over default
    assert settings.read_timeout == Settings().read_timeout == 15.0  # default


def test_the_file_is_found_through_orchestrator_config_then_the_working_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _write(tmp_path / "config.yaml", "worker_threads: 2\n")
    assert load_settings().worker_threads == 2

    elsewhere = _write(tmp_path / "elsewhere.yaml", "worker_threads: 5\n")
    monkeypatch.setenv(CONFIG_ENV, str(elsewhere))
    assert load_settings().worker_threads == 5


def test_a_duration_written_as_2m_is_120_seconds(tmp_path: Path) -> None:
    settings_file = _write(tmp_path / "settings.yaml", "cancel_min_age: 2m\n")
    assert load_settings(settings_file).cancel_min_age == 120.0


def test_an_expiry_margin_under_two_sweep_intervals_is_refused(tmp_path: Path) -> None:
    settings_file = _write(tmp_path / "settings.yaml", "sweep_interval: 1m\n")
    with pytest.raises(ConfigError, match="at least twice sweep_interval") as caught:
        load_settings(settings_file)
    assert str(caught.value).startswith(f"{settings_file}: expiry_margin (90s) must be")


def test_the_api_key_is_a_secret_that_its_repr_hides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGITSMS_API_KEY", SECRET)

    settings = load_settings()

    assert isinstance(settings.api_key, SecretStr)
    assert settings.require_api_key() == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


def _config_app() -> typer.Typer:
    """A throwaway app holding only the command, as cli/app.py registers it."""
    app = typer.Typer()
    app.command("config")(config_command)

    @app.callback()
    def _root() -> None:  # with a callback, `config` stays a named subcommand
        pass

    return app


def test_config_shows_each_value_with_its_variable_and_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings_file = _write(tmp_path / "settings.yaml", "poll_interval: 7s\nworker_threads: 3\n")
    monkeypatch.setenv("ORCHESTRATOR_POLL_INTERVAL", "1.5m")
    monkeypatch.setenv("LEGITSMS_API_KEY", SECRET)

    result = CliRunner().invoke(_config_app(), ["config", "--config", str(settings_file)])

    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if "=" in line}
    assert set(lines) == set(Settings.model_fields)
    assert re.fullmatch(
        r"poll_interval +\= 1m30s +# ORCHESTRATOR_POLL_INTERVAL \(env\)", lines["poll_interval"]
    )
    assert re.fullmatch(
        r"worker_threads +\= 3 +# ORCHESTRATOR_WORKER_THREADS \(file\)", lines["worker_threads"]
    )
    assert re.fullmatch(
        r"log_level +\= info +# ORCHESTRATOR_LOG_LEVEL \(default\)", lines["log_level"]
    )
    assert re.fullmatch(r"api_key +\= \*\*\* +# LEGITSMS_API_KEY \(env\)", lines["api_key"])
    assert SECRET not in result.output


def test_config_hides_a_password_in_a_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://orch:hunter2@db:5432/orch")

    result = CliRunner().invoke(_config_app(), ["config"])

    assert result.exit_code == 0, result.output
    assert "postgresql+psycopg://orch:***@db:5432/orch" in result.output
    assert "hunter2" not in result.output


def test_config_says_when_no_key_is_set() -> None:
    result = CliRunner().invoke(_config_app(), ["config"])

    assert result.exit_code == 0, result.output
    assert re.search(r"^api_key +\= \(not set\) ", result.output, re.MULTILINE)


def test_config_names_the_bad_setting_and_exits_2(tmp_path: Path) -> None:
    settings_file = _write(tmp_path / "settings.yaml", "poll_intervl: 5s\n")

    result = CliRunner().invoke(_config_app(), ["config", "--config", str(settings_file)])

    assert result.exit_code == 2
    assert "poll_intervl: is not a known setting; did you mean 'poll_interval'?" in result.output


_REGISTERED = any(command.name == "config" for command in orchestrator_app.registered_commands)


@pytest.mark.skipif(not _REGISTERED, reason="`config` is not registered in cli/app.py yet")
def test_orchestrator_config_reads_the_global_config_option(tmp_path: Path) -> None:
    settings_file = _write(tmp_path / "settings.yaml", "worker_threads: 3\n")

    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--config", str(settings_file), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "LEGITSMS_API_KEY": SECRET},  # the fixture removed the others
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert re.search(r"^worker_threads +\= 3 +# \S+ \(file\)$", result.stdout, re.MULTILINE)
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("REDIS_URL", "redis://127.0.0.1:6379/0"),
        ("REDIS_URL", "rediss://:secret@redis.example.com:6380"),
        ("REDIS_URL", "unix:///run/redis/redis.sock"),
        ("REDIS_URL", "redis://localhost"),
        ("DATABASE_URL", "sqlite:///relative/orchestrator.db"),
        ("DATABASE_URL", "postgresql+psycopg://user:pw@db.example.com:5432/orchestrator"),
        ("DATABASE_URL", "postgresql://user@db/orchestrator"),
        ("LEGITSMS_BASE_URL", "http://127.0.0.1:8765/wp-json/legitsms/v2"),
        ("LEGITSMS_API_KEY", "sk_live_AbC-123.~!"),
        ("ORCHESTRATOR_RATE_LIMIT", "0"),
        ("ORCHESTRATOR_RATE_LIMIT", "0.001"),
        ("ORCHESTRATOR_LOG_LEVEL", "WARNING"),
        ("ORCHESTRATOR_BREAKER_FAILURES", "1"),
        ("ORCHESTRATOR_BREAKER_COOLDOWN", "0"),
        ("ORCHESTRATOR_BREAKER_COOLDOWN", "1h30m"),
    ],
)
def test_usual_urls_keys_and_levels_are_accepted(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    load_settings()


def test_an_empty_redis_or_database_url_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("DATABASE_URL", "")
    settings = load_settings()
    assert settings.redis_url is None
    assert settings.database_url is None


def test_a_bad_url_is_refused_without_quoting_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:hunter2@db:5432:5432/x")
    monkeypatch.setenv("REDIS_URL", "http://:hunter2@redis:6379")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "environment variable DATABASE_URL: has a port that is not a number" in str(caught.value)
    assert "environment variable REDIS_URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)
