"""Bounds on a job: the file's size and the numbers it asks for, both raisable in settings."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.config import Settings
from orchestrator.errors import SpecError
from orchestrator.jobs.spec import JobLimits, load_job_spec, parse_job_spec, read_job_file

JOB = """\
name: big
targets:
  - service: Whatsapp
    country: 16
    quantity: {quantity}
    max_price: 1.50
"""


def _job(tmp_path: Path, quantity: object, *, extra: str = "") -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(JOB.format(quantity=quantity) + extra, encoding="utf-8")
    return path


def _refused(path: Path | str, limits: JobLimits = JobLimits()) -> SpecError:  # noqa: B008
    with pytest.raises(SpecError) as caught:
        load_job_spec(path, limits)
    return caught.value


def test_the_settings_default_to_a_megabyte_and_ten_thousand_numbers() -> None:
    limits = JobLimits.of(Settings())
    assert limits == JobLimits() == JobLimits(max_file_bytes=1_000_000, max_numbers=10_000)


def test_an_absurd_quantity_is_refused_in_validation_naming_the_field(tmp_path: Path) -> None:
    # It used to reach the database and end in OverflowError (a traceback, exit 1).
    error = _refused(_job(tmp_path, 10**20))
    assert error.field == "targets[0].quantity"
    assert "is 100000000000000000000, more than max_numbers_per_job (10000)" in error.problem
    assert "(line 5)" in error.problem


def test_a_quantity_above_the_limit_is_refused_at_once(tmp_path: Path) -> None:
    # A million numbers with no budget took 64 s and 2.7 GB to plan at submit.
    started = time.monotonic()
    error = _refused(_job(tmp_path, 1_000_000))
    assert time.monotonic() - started < 1.0
    assert error.field == "targets[0].quantity"
    assert "max_numbers_per_job (10000)" in error.problem


def test_a_quantity_at_the_limit_is_accepted(tmp_path: Path) -> None:
    assert load_job_spec(_job(tmp_path, 10_000)).targets[0].quantity == 10_000


def test_targets_together_above_the_limit_are_refused_naming_targets(tmp_path: Path) -> None:
    second = "  - service: Telegram\n    country: 16\n    quantity: 6000\n    max_price: 1\n"
    error = _refused(_job(tmp_path, 5000, extra=second))
    assert error.field == "targets"
    assert error.problem.startswith("ask for 11000 numbers in all, more than max_numbers_per_job")
    assert error.problem.endswith("(line 3)")  # where the list begins


def test_a_raised_limit_lets_a_larger_job_through(tmp_path: Path) -> None:
    spec = load_job_spec(_job(tmp_path, 50_000), JobLimits(max_numbers=50_000))
    assert spec.targets[0].quantity == 50_000
    with pytest.raises(SpecError, match="max_numbers_per_job"):
        parse_job_spec(
            "name: x\ntargets:\n  - {service: 1, country: 1, quantity: 3, max_price: 1}\n",
            "inline",
            JobLimits(max_numbers=2),
        )


def test_a_number_too_long_to_read_is_refused_not_a_traceback(tmp_path: Path) -> None:
    error = _refused(_job(tmp_path, "9" * 5000))
    assert error.field == ""
    assert "cannot be read" in error.problem


def test_a_file_larger_than_the_limit_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path = _job(tmp_path, 1, extra="#" * 200 + "\n")
    size = path.stat().st_size
    error = _refused(path, JobLimits(max_file_bytes=size - 1))
    assert error.field == ""
    assert f"is larger than {size - 1} bytes (max_job_file_bytes)" in error.problem
    assert load_job_spec(path, JobLimits(max_file_bytes=size)).name == "big"


def test_dev_zero_is_refused_quickly_after_reading_only_the_limit() -> None:
    # It used to be read whole: a MemoryError after gigabytes.
    started = time.monotonic()
    with pytest.raises(SpecError, match="is larger than 1000000 bytes"):
        read_job_file("/dev/zero")
    assert time.monotonic() - started < 1.0


def test_a_huge_file_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:  # 100 MB, sparse: nothing is really written
        handle.truncate(100_000_000)
    started = time.monotonic()
    with pytest.raises(SpecError, match="max_job_file_bytes"):
        load_job_spec(path)
    assert time.monotonic() - started < 1.0


def test_the_text_read_is_the_text_stored_with_windows_line_ends_as_read_text_gives(
    tmp_path: Path,
) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + JOB.format(quantity=1).replace("\n", "\r\n").encode())
    assert read_job_file(path) == JOB.format(quantity=1)
