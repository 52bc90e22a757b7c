"""The command line's conventions: --version, -h, shell completion, help without Python types
or placeholders on flags, usage lines as Unix tools write them, options checked (exit 2)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.cli.exit_codes import ExitCode
from tests.support import write_job

runner = CliRunner()
WIDE = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def _command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    paths: list[list[str]] = [[]]
    for name, command in root.commands.items():
        paths.append([name])
        if isinstance(command, typer.core.TyperGroup):
            paths += [[name, sub] for sub in command.commands]
    return paths


COMMANDS = _command_paths()


def _help(path: list[str], flag: str = "--help") -> str:
    result = runner.invoke(app, [*path, flag], env=WIDE, prog_name="orchestrator")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "orchestrator")
def test_help_shows_no_python_types_no_braces_and_no_placeholder_on_a_flag(
    path: list[str],
) -> None:
    text = _help(path)

    assert not re.search(r"<[a-z][\w\[\], |]*>", text), text  # <bool>, <list[str]>, <path>
    assert "{" not in _usage(text), text  # no {job_file}
    for line in text.splitlines():
        # A flag's row: the option, then straight to its help text, no type or placeholder.
        if re.search(r"--(help|quiet|allow-overlap|not-bought|json|version)\b", line):
            assert not re.search(r"\s(TEXT|INTEGER|BOOL|BOOLEAN|PATH)\s", line), line


def _usage(text: str) -> str:
    return next(line.strip() for line in text.splitlines() if "Usage:" in line)


@pytest.mark.parametrize(
    ("path", "usage"),
    [
        (["run"], "Usage: orchestrator run [OPTIONS] JOB_FILE"),
        (["status"], "Usage: orchestrator status [OPTIONS] [JOB]"),
        (["export"], "Usage: orchestrator export [OPTIONS] [JOBS...]"),
        (["resolve"], "Usage: orchestrator resolve [OPTIONS] ACTIVATION"),
        ([], "Usage: orchestrator [OPTIONS] COMMAND [ARGS]..."),
    ],
)
def test_the_usage_line_names_arguments_in_capitals(path: list[str], usage: str) -> None:
    assert _usage(_help(path)) == usage


def test_an_option_with_a_value_shows_what_it_takes() -> None:
    text = _help(["export"])
    assert re.search(r"--since\s+DAY", text), text
    assert re.search(r"--format\s+\[csv\|jsonl\]", text), text
    assert re.search(r"--workers\s+INTEGER", _help(["run"]))


@pytest.mark.parametrize("path", [[], ["run"], ["db", "upgrade"]])
def test_h_is_the_same_as_help(path: list[str]) -> None:
    assert _help(path, "-h") == _help(path, "--help")


# The installed command, as a shell runs it (completion scripts are named after it).
COMMAND = str(Path(sys.executable).parent / "orchestrator")


def test_version_prints_the_installed_version_and_exits_0() -> None:
    result = subprocess.run([COMMAND, "--version"], capture_output=True, text=True, check=False)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"orchestrator {version('legitsms-orchestrator')}\n"


def test_shell_completion_can_be_shown_and_installed() -> None:
    text = _help([])
    assert "--install-completion" in text
    assert "--show-completion" in text

    # Typer finds the shell among the command's parents, as it would in a user's bash; the
    # test runner's own parents may hold an unsupported `sh` (make runs recipes with one).
    # The `; exit` keeps bash a parent, rather than replacing itself with the command.
    result = subprocess.run(
        ["bash", "-c", f'"{COMMAND}" --show-completion; exit $?'],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "complete -o default -F _orchestrator_completion orchestrator" in result.stdout
    completed = subprocess.run(
        [COMMAND],
        env={
            **os.environ,
            "_ORCHESTRATOR_COMPLETE": "complete_bash",
            "COMP_WORDS": "orchestrator st",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.stdout.split() == ["status"], completed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--log-level", "verbose", "status"], "--log-level must be debug, info, warning or error"),
        (["run", "JOB", "--workers", "-1"], "--workers must be at least 0, got -1"),
        (["worker", "--processes", "0"], "--processes must be at least 1, got 0"),
        (["worker", "--threads", "-2"], "--threads must be at least 1, got -2"),
        (["scheduler", ".", "--tick", "0"], "--tick must be more than 0 seconds, got 0"),
    ],
)
def test_an_option_out_of_range_exits_2_with_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    job = write_job(tmp_path, "name: x\n")
    args = [str(job) if arg == "JOB" else arg for arg in args]

    result = runner.invoke(app, args, env={"ORCHESTRATOR_DATA_DIR": str(tmp_path)})

    assert result.exit_code == ExitCode.BAD_INPUT
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_port_out_of_range_is_refused_before_the_simulator_starts() -> None:
    result = runner.invoke(app, ["sandbox", "--port", "70000"])

    assert result.exit_code == ExitCode.BAD_INPUT
    assert "65535" in result.output and "Traceback" not in result.output
