"""Output paths (export, run --export, report): a symlink is followed and kept; a folder, FIFO,
device or socket is refused with exit 2; nothing is ever left behind."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import pytest

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.errors import OutputRefused
from orchestrator.jobs.output_file import output_target, write_atomically
from orchestrator.sandbox.server import SandboxServer
from tests.support import Orchestrator, fast_env, submitted_job_id, write_job

JOB = """\
name: paths
budget: 10.00
targets:
  - service: Telegram
    country: United Kingdom
    quantity: 2
    max_price: 2.00
"""


def _text(body: str) -> Callable[[TextIO], int]:
    return lambda handle: handle.write(body)


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_a_new_file_is_written_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    path = tmp_path / "out" / "rows.csv"  # the folder is made
    assert write_atomically(path, _text("a,b\n")) == 4
    assert path.read_text() == "a,b\n"
    assert _listing(path.parent) == ["rows.csv"]


def test_a_symlink_is_followed_its_target_replaced_and_the_link_kept(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "rows.csv"
    target.write_text("old\n")
    target.chmod(0o640)
    link = tmp_path / "latest.csv"
    link.symlink_to(target)

    write_atomically(link, _text("new\n"))

    assert link.is_symlink() and link.resolve() == target
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # the replaced file's permissions
    assert _listing(tmp_path / "real") == ["rows.csv"]  # the temporary file was beside it
    assert _listing(tmp_path) == ["latest.csv", "real"]


def test_a_dangling_symlink_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "latest.csv"
    link.symlink_to(tmp_path / "made" / "rows.csv")
    write_atomically(link, _text("x\n"))
    assert link.is_symlink()
    assert (tmp_path / "made" / "rows.csv").read_text() == "x\n"


@pytest.fixture
def specials(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A folder, a FIFO, a socket, a device, and a symlink to the FIFO, in their own folder."""
    folder = tmp_path / "specials"
    folder.mkdir()
    (folder / "dir").mkdir()
    os.mkfifo(folder / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(folder / "sock"))
    (folder / "to-fifo").symlink_to(folder / "fifo")
    (folder / "to-null").symlink_to("/dev/null")
    yield {
        "a folder": folder / "dir",
        "a FIFO (named pipe)": folder / "fifo",
        "a socket": folder / "sock",
        "a character device": Path("/dev/null"),
        "leads to": folder / "to-fifo",
        "leads to /dev/null": folder / "to-null",
    }
    sock.close()


KINDS = ["a folder", "a FIFO (named pipe)", "a socket", "a character device", "leads to"]


@pytest.mark.parametrize("kind", [*KINDS, "leads to /dev/null"])
def test_anything_but_a_regular_file_is_refused_and_left_as_it_was(
    specials: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    path = specials[kind]
    before = _listing(tmp_path / "specials"), _listing(Path("/dev"))
    mode = os.lstat(path).st_mode
    called: list[bool] = []

    def write(_handle: TextIO) -> int:
        called.append(True)
        return 0

    with pytest.raises(OutputRefused) as caught:
        write_atomically(path, write)

    assert str(caught.value).startswith(f"{path}: ")
    assert kind.split(" /", maxsplit=1)[0] in str(caught.value)
    assert not called  # refused before anything was written
    assert (_listing(tmp_path / "specials"), _listing(Path("/dev"))) == before
    assert os.lstat(path).st_mode == mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("old\n")

    def fail(handle: TextIO) -> int:
        handle.write("half")
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError):
        write_atomically(path, fail)
    assert path.read_text() == "old\n"
    assert _listing(tmp_path) == ["rows.csv"]


def test_a_folder_that_cannot_be_made_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputRefused, match="Not a directory"):
        write_atomically(tmp_path / "file" / "rows.csv", _text("x"))


def test_a_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(OutputRefused, match="cannot be written"):
        output_target(tmp_path / "a")


# The commands


@pytest.fixture
def cli(tmp_path: Path, sandbox: SandboxServer, redis_url: str, sqlite_url: str) -> Orchestrator:
    return Orchestrator(
        workdir=tmp_path, env=fast_env(sandbox.url, redis_url, sqlite_url, tmp_path)
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_export_and_report_refuse_what_is_not_a_file_and_follow_a_symlink(
    cli: Orchestrator, specials: dict[str, Path], tmp_path: Path
) -> None:
    submitted = cli.run("submit", str(write_job(tmp_path, JOB)), timeout=60)
    assert submitted.returncode == 0, submitted.stderr
    job = str(submitted_job_id(submitted.stdout))
    before = _listing(tmp_path / "specials"), _listing(Path("/dev"))

    for kind in KINDS:
        path = str(specials[kind])
        for args in (["export", job, "--output", path], ["report", job, "--output", path]):
            result = cli.run(*args, timeout=60)
            assert result.returncode == ExitCode.BAD_INPUT, (args, result.stderr)
            assert _one_error_line(result).startswith(f"error: {path}: "), args

    assert (_listing(tmp_path / "specials"), _listing(Path("/dev"))) == before
    assert stat.S_ISFIFO(os.stat(specials["a FIFO (named pipe)"]).st_mode)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)

    target = tmp_path / "kept" / "rows.csv"
    target.parent.mkdir()
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    for args in (["export", job, "--output", str(link)], ["report", job, "--output", str(link)]):
        result = cli.run(*args, timeout=60)
        assert result.returncode == 0, result.stderr
        assert link.is_symlink() and target.stat().st_size > 0
    assert _listing(target.parent) == ["rows.csv"]


@pytest.mark.parametrize("kind", ["a folder", "a FIFO (named pipe)"])
def test_run_refuses_an_export_path_that_is_not_a_file_before_buying(
    cli: Orchestrator, specials: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    # It used to run the whole job, then fail (IsADirectoryError, leaving DIR.tmp) or
    # replace the FIFO with a regular file.
    path = str(specials[kind])
    job_file = write_job(tmp_path, JOB)

    result = cli.run("run", str(job_file), "--workers", "0", "--export", path, timeout=30)

    assert result.returncode == ExitCode.BAD_INPUT, result.stderr
    assert _one_error_line(result) == f"error: {path}: is {kind}; give the path of a file to write"
    assert "submitted" not in result.stderr + result.stdout
    assert _listing(tmp_path / "specials") == ["dir", "fifo", "sock", "to-fifo", "to-null"]
