"""Provider text and secrets on their way out (rule 8, rule 10), one surface at a time.

The end-to-end run is ``test_hostile_provider.py``; these are the pieces, fast: the CSV
writer, log lines (with and without exceptions), provider errors, ``orchestrator config``,
and the masking, terminal and CSV functions themselves (``orchestrator.redact``).
"""

from __future__ import annotations

import csv
import io
import json
import secrets
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
import typer
from typer.testing import CliRunner

from orchestrator.cli.config_view import config_command
from orchestrator.db.models import Activation, Job, State, Target
from orchestrator.errors import InvalidKey, MalformedResponse
from orchestrator.jobs.export import COLUMNS, write_csv, write_jsonl
from orchestrator.logs import configure_logging

KEY = "sk_live_" + secrets.token_hex(16)
STAMP = datetime(2026, 11, 24, 22, 16, 52, 710866, tzinfo=UTC)


def _row(**fields: Any) -> tuple[Job, Target, Activation]:
    job = Job(id=7, name="nightly", source="", code_timeout=600.0)
    target = Target(
        id=1,
        job_id=7,
        position=0,
        service_id=1012,
        service_name=fields.pop("service_name", "Whatsapp"),
        countries="[]",
        quantity=1,
        max_price_micros=2_000_000,
    )
    values: dict[str, Any] = {
        "id": 1,
        "job_id": 7,
        "target_id": 1,
        "slot": 0,
        "state": State.RECEIVED,
        "service_id": 1012,
        "country_id": 16,
        "country_name": "United Kingdom",
        "cap_micros": 2_000_000,
        "order_id": "12345",
        "phone": "+447700900123",
        "cost_micros": 1_550_000,
        "code": "123456",
        "ordered_at": STAMP,
        "code_at": STAMP,
        "finished_at": STAMP,
        **fields,
    }
    return job, target, Activation(**values)


def _csv_records(rows: list[tuple[Job, Target, Activation]]) -> list[list[str]]:
    out = io.StringIO(newline="")
    assert write_csv(rows, out, {}) == len(rows)
    return list(csv.reader(io.StringIO(out.getvalue(), newline="")))


# -- CSV ------------------------------------------------------------------------------------


def test_a_line_break_inside_a_provider_value_never_splits_a_csv_row() -> None:
    rows = [
        _row(slot=0, country_name="United\rKingdom", code="12\r34"),
        _row(slot=1, error="first line\nsecond line", phone="+44\r\n1"),
        _row(slot=2, service_name='a,b "quoted"\r'),
    ]

    header, *records = _csv_records(rows)

    assert header == list(COLUMNS)
    assert len(records) == 3  # was 6: a lone CR went out unquoted and a reader split there
    by_column = [dict(zip(header, record, strict=True)) for record in records]
    assert by_column[0]["country_name"] == "United\rKingdom"
    assert by_column[0]["code"] == "12\r34"
    assert by_column[1]["error"] == "first line\nsecond line"
    assert by_column[2]["service_name"] == 'a,b "quoted"\r'


@pytest.mark.parametrize(
    ("column", "value", "cell"),
    [
        ("service_name", '=HYPERLINK("http://x","click")', '\'=HYPERLINK("http://x","click")'),
        ("country_name", "+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("order_id", "-2+3+cmd|'/C calc'!A0", "'-2+3+cmd|'/C calc'!A0"),
        ("phone", "@SUM(1+1)", "'@SUM(1+1)"),
        ("code", "\t=1+1", "'\t=1+1"),
        ("error", "\r=1+1", "'\r=1+1"),
        ("country_name", "  =1+1", "'  =1+1"),  # a spreadsheet may trim the spaces first
        ("service_name", "\uff1dcmd()", "'\uff1dcmd()"),  # full-width =
        # Plain numbers are read as numbers, never as formulas: left as they are.
        ("phone", "+447700900123", "+447700900123"),
        ("code", "-123456", "-123456"),
        # Text that merely holds an operator later on is no formula.
        ("error", "no_stock: 1+1=2", "no_stock: 1+1=2"),
    ],
)
def test_a_csv_cell_that_would_run_as_a_formula_starts_with_a_quote(
    column: str, value: str, cell: str
) -> None:
    fields: dict[str, Any] = {column: value}
    header, record = _csv_records([_row(**fields)])

    assert dict(zip(header, record, strict=True))[column] == cell


def test_csv_columns_we_write_ourselves_are_left_as_they_are() -> None:
    header, record = _csv_records([_row(state=State.CANCELLED)])
    cells = dict(zip(header, record, strict=True))

    assert cells["ordered_at"] == "2026-11-24T22:16:52.710866Z"
    assert cells["cost"] == "1.55"
    assert cells["max_price"] == "2.00"
    assert cells["job_id"] == "7"
    assert cells["status"] == "cancelled"


def test_json_lines_keep_raw_provider_values_but_mask_the_key() -> None:
    configure_logging("info", json=True, secret=KEY)  # registers the key, as the CLI does
    out = io.StringIO()
    write_jsonl(
        [_row(country_name="=1+1\r", error=f"invalid_key (401): Invalid API Key {KEY}")],
        out,
        {},
    )

    record = json.loads(out.getvalue())

    assert record["country_name"] == "=1+1\r"
    assert record["error"] == "invalid_key (401): Invalid API Key ***"


def test_the_csv_masks_the_key_in_any_text_column() -> None:
    configure_logging("info", json=True, secret=KEY)
    rows = [_row(error=f"Invalid API Key {KEY}", code=KEY[8:], service_name=KEY[:20] + "...")]

    text = "\n".join(",".join(record) for record in _csv_records(rows))

    assert KEY not in text and KEY[8:] not in text and KEY[:20] not in text


# -- provider errors and logs ---------------------------------------------------------------


def test_a_provider_error_repeating_the_key_carries_it_masked() -> None:
    configure_logging("info", json=True, secret=KEY)

    refused = InvalidKey(f"Invalid API Key {KEY}", status=401)
    # A message cut short in the middle of the key (the client quotes 80 characters).
    cut = MalformedResponse(f"/order: answer also says {{'message': 'Invalid API Key {KEY[:24]}")

    assert KEY not in str(refused) and KEY not in refused.message
    assert str(refused) == "invalid_key (401): Invalid API Key ***"
    assert KEY[:24] not in str(cut) and KEY[:12] not in str(cut)


def _log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]


def test_a_failure_logged_in_json_carries_the_exception_type_message_and_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", json=True, secret=KEY)
    log = structlog.get_logger("tests")

    try:
        raise RuntimeError(f"database said no to {KEY}")
    except RuntimeError:
        log.exception("step_failed", step="place")

    (line,) = _log_lines(capsys)
    assert line["event"] == "step_failed"
    assert "exc_info" not in line  # was `"exc_info": true` and nothing else
    (exception,) = line["exception"]
    assert exception["exc_type"] == "RuntimeError"
    assert exception["exc_value"] == "database said no to ***"
    assert exception["frames"], "the traceback's frames"
    assert exception["frames"][-1]["name"].startswith("test_a_failure_logged")
    assert KEY not in json.dumps(line)


def test_a_failure_logged_for_a_terminal_shows_the_traceback_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", json=False, secret=KEY)
    log = structlog.get_logger("tests")

    try:
        raise ValueError(f"bad answer \x1b[31m{KEY}")
    except ValueError:
        log.exception("step_failed")

    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert "ValueError: bad answer \\x1b[31m***" in err
    assert KEY not in err and "\x1b" not in err


def test_provider_text_in_a_terminal_log_line_cannot_drive_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("info", json=False)
    log = structlog.get_logger("tests")

    link = "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\"
    log.warning("cancel_refused", order_id=link, answer="\u202eevil", code="\x9b31m")

    err = capsys.readouterr().err
    assert "cancel_refused" in err
    for raw in ("\x1b", "\x9b", "\u202e"):
        assert raw not in err
    assert "\\x1b]8;;http://evil.example" in err


# -- orchestrator config --------------------------------------------------------------------


def _config_app() -> typer.Typer:
    app = typer.Typer()
    app.command("config")(config_command)

    @app.callback()
    def _root() -> None:
        pass

    return app


def test_config_hides_passwords_in_any_url_form_and_the_key_wherever_it_appears(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEGITSMS_API_KEY", KEY)
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://orch@db/orch?password=hunter2pw")
    monkeypatch.setenv("REDIS_URL", "redis://:s3cr3t-redis@cache:6379/0")
    monkeypatch.setenv("LEGITSMS_BASE_URL", f"https://proxy.example/v2?api_key={KEY}")

    result = CliRunner().invoke(_config_app(), ["config"])

    assert result.exit_code == 0, result.output
    assert "postgresql+psycopg://orch@db/orch?password=***" in result.output
    assert "redis://:***@cache:6379/0" in result.output
    for secret in ("hunter2pw", "s3cr3t-redis", KEY):
        assert secret not in result.output


# -- the functions --------------------------------------------------------------------------


def test_mask_hides_the_key_whole_cut_short_or_without_its_prefix() -> None:
    from orchestrator import redact

    redact.register(KEY)

    assert redact.mask(f"Invalid API Key {KEY}.") == "Invalid API Key ***."
    assert redact.mask(f"key {KEY[:30]}... (90 characters)") == "key ***... (90 characters)"
    assert redact.mask(f"key={KEY[8:]}") == "key=***"
    assert redact.mask("nothing secret here") == "nothing secret here"
    assert redact.mask("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redact.mask_data({"a": [f"x {KEY}", 3], "b": (KEY,)}) == {
        "a": ["x ***", 3],
        "b": ("***",),
    }


def test_for_terminal_escapes_every_control_a_terminal_acts_on() -> None:
    from orchestrator.redact import for_terminal

    hostile = "a\x1b[31mb\x07c\x9bd\x7fe\u202ef\u2066g\u2069h\u200ei\r\nj\tk"

    shown = for_terminal(hostile)

    assert shown == "a\\x1b[31mb\\x07c\\x9bd\\x7fe\\u202ef\\u2066g\\u2069h\\u200ei\\r\\nj\\tk"
    assert shown.isprintable()
    assert for_terminal("[/x] Bad [link=http://e]x[/link]") == "[/x] Bad [link=http://e]x[/link]"
    assert for_terminal("line\nnext\x1b", newlines=True) == "line\nnext\\x1b"
