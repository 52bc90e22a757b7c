"""A hostile provider: every string it sends is a payload, and every output stays safe (rule 8).

The simulator serves names, order ids, phones, codes and error messages holding spreadsheet
formulas, rich markup, terminal escapes (C0, C1, DEL, OSC 8 links, bidi overrides) and the API
key itself. A real ``run`` buys numbers from it; then ``status``, ``services``, ``prices``,
``export`` (CSV and JSON lines) and ``report`` are read, and the database is dumped.

- CSV: a standard reader gets one record per number; a text cell that would start a formula
  starts with ``'``; every other value comes back as the JSON lines hold it.
- Terminal: no command crashes on markup; no payload's escape reaches the output raw.
- The key (or any 12 characters of it) appears nowhere.
"""

from __future__ import annotations

import csv
import json
import secrets
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from orchestrator.sandbox.config import SandboxConfig, SandboxCountry, SandboxOffer, SandboxService
from orchestrator.sandbox.server import SandboxServer
from orchestrator.sandbox.simulator import Headers, Reply, Simulator
from tests.support import Orchestrator, database_as_text, write_job

pytestmark = pytest.mark.slow

KEY = "sk_live_" + secrets.token_hex(16)
FRAGMENT = 12  # any this many consecutive characters of the key count as a leak

# Escapes a terminal would act on: CSI colour, an OSC 8 hyperlink, a C1 CSI, DEL, bidi overrides.
RED = "\x1b[31mred\x1b[0m"
OSC_LINK = "\x1b]8;;http://evil.example\x1b\\osc\x1b]8;;\x1b\\"
C1 = "\x9b31m"
BIDI = "\u202eevil\u202c \u2066iso\u2069"
RAW_ESCAPES = ("\x1b", "\x9b", "\x7f", "\u202e", "\u202c", "\u2066", "\u2069")

COUNTRIES = (
    SandboxCountry(1, '=HYPERLINK("http://x","click")', "1"),
    SandboxCountry(16, f"[/bold] {RED} {BIDI}", "44"),
    SandboxCountry(36, "+cmd|' /C calc'!A0\rsplit", "1"),
)
SERVICES = (
    SandboxService(
        1003,
        "[/x] Bad",
        {1: SandboxOffer(Decimal("1.20"), 500, 70), 16: SandboxOffer(Decimal("1.10"), 500, 70)},
    ),
    SandboxService(
        924,
        f"[link=http://evil.example]click[/link] {OSC_LINK}",
        {16: SandboxOffer(Decimal("0.40"), 500, 70), 36: SandboxOffer(Decimal("0.30"), 500, 70)},
    ),
    SandboxService(
        1010,
        f"@SUM(1) key {KEY} {C1}\x7f",
        {1: SandboxOffer(Decimal("0.50"), 500, 70), 36: SandboxOffer(Decimal("0.60"), 500, 70)},
    ),
)
# Order ids must be usable (printable, no whitespace, at most 64 characters) to be bought.
ORDER_IDS = (
    '=HYPERLINK("http://x","y")#',
    "+cmd|'/Ccalc'!A0#",
    "@SUM(1+1)#",
    "-1+",
    "[/x]#",
    "[link=http://evil.example]x[/link]#",
)
PHONES = ("+441234567890", "=1+2", "[/bold]", "@x 12", "-2+3")
CODES = ("=1+1", "12\r=evil()", f"{RED}123", "[/x] 123", f"code {KEY}", "\t@x", C1 + "\x7f9")
REFUSAL = f"Order cannot be cancelled yet [/x] {RED} {OSC_LINK} =1+1 Invalid API Key {KEY}"
PROVIDER = SandboxConfig(
    seed=5,
    api_keys=(KEY,),
    countries=COUNTRIES,
    services=SERVICES,
    code_delay=(0.2, 2.0),
    never_ratio=0.4,
    cancel_min_age=2.0,
    expiry=40.0,
)
JOB = """\
name: hostile
budget: 50.00
code_timeout: 4s
targets:
  - service: 1003
    countries: [1, 16]
    quantity: 3
    max_price: 2.00
  - service: 924
    countries: [16, 36]
    quantity: 3
    max_price: 2.00
  - service: 1010
    countries: [36, 1]
    quantity: 3
    max_price: 2.00
"""
SLOTS = 9
KEY_ORDER = 4  # this order's id holds the key: it may not be stored, so the slot is in doubt
BAD_JOB = """\
name: bad
targets:
  - {service: 999, country: 1, quantity: 1, max_price: 1}
  - {service: 1003, country: 99, quantity: 1, max_price: 1}
"""
TEXT_COLUMNS = ("job_name", "service_name", "country_name", "order_id", "phone", "code", "error")


class HostileSimulator(Simulator):
    """The simulator, with every string of its answers swapped for a payload.

    Order ids are aliased (the payload goes out, the real id is looked up when it comes
    back); the first cancel of each order is refused with a message echoing the key; one
    order answer also carries an error echoing the key (an unusable order: kept, cancelled),
    and another's id holds the key (the slot is then in doubt: the id may not be stored).
    With ``refuse_key``, every request is refused as if the key were wrong, echoing it.
    """

    def __init__(self, config: SandboxConfig) -> None:
        super().__init__(config)
        self.refuse_key = False
        self._alias: dict[str, str] = {}  # payload order id -> real one
        self._orders = 0
        self._codes = 0
        self._refused: set[str] = set()

    def handle(self, method: str, target: str, body: bytes, headers: Headers) -> Reply:
        if self.refuse_key:
            return _reply(401, {"code": "invalid_key", "message": f"Invalid API Key {KEY} [/x]"})
        url = urlsplit(target)
        query = self._real_ids(url.query)
        form = self._real_ids(body.decode("latin-1")).encode("latin-1") if body else body
        order_id = dict(parse_qsl(query)).get("order_id") or dict(
            parse_qsl(form.decode("latin-1"))
        ).get("order_id")
        if url.path.endswith("/set_status") and order_id and order_id not in self._refused:
            self._refused.add(order_id)
            return _reply(400, {"code": "cancel_failed", "message": REFUSAL})
        reply = super().handle(method, urlunsplit(url._replace(query=query)), form, headers)
        if reply.status != 200 or not reply.body.startswith(b"{"):
            return reply
        answer = json.loads(reply.body)
        if url.path.endswith("/order") and "order_id" in answer:
            i = self._orders
            self._orders += 1
            alias = f"{ORDER_IDS[i % len(ORDER_IDS)]}{i}" if i != KEY_ORDER else f"{KEY}#{i}"
            self._alias[alias] = answer["order_id"]
            answer.update(order_id=alias, phone=PHONES[i % len(PHONES)])
            if i == 2:
                answer.update(status="error", message=f"Invalid API Key {KEY}")
        elif url.path.endswith("/status") and answer.get("status") == "STATUS_OK":
            answer["code"] = CODES[self._codes % len(CODES)]
            self._codes += 1
        return replace(reply, body=json.dumps(answer).encode())

    def _real_ids(self, form: str) -> str:
        pairs = parse_qsl(form, keep_blank_values=True)
        return urlencode([(k, self._alias.get(v, v) if k == "order_id" else v) for k, v in pairs])


def _reply(status: int, payload: dict[str, Any]) -> Reply:
    return Reply(status, json.dumps(payload).encode())


@pytest.fixture
def database_url(sqlite_url: str) -> str:
    """SQLite only: text is masked in Python (store.move, store.record) before any SQL, so the
    database only keeps what it is given; one run of this long test is enough."""
    return sqlite_url


@pytest.fixture
def hostile() -> HostileSimulator:
    return HostileSimulator(PROVIDER)


@pytest.fixture
def sandbox(hostile: HostileSimulator) -> Iterator[SandboxServer]:
    with SandboxServer(simulator=hostile) as server:
        yield server


def test_hostile_provider_strings_are_neutralised_in_every_output(
    orchestrator: Orchestrator, hostile: HostileSimulator, database_url: str, tmp_path: Path
) -> None:
    orchestrator.env["LEGITSMS_API_KEY"] = KEY
    job = write_job(tmp_path, JOB)
    problems: list[str] = []

    # Logs as on a terminal (key=value, coloured), the run's and its workers'.
    console = {"ORCHESTRATOR_LOG_CONSOLE": "1"}
    run = orchestrator.run("run", str(job), "--export", "out/hostile.csv", timeout=150, **console)
    assert run.returncode in (0, 1, 3), run.stderr[-3000:]
    assert "cancel_refused" in run.stderr, "the refusals (with payloads) were logged"
    _terminal_safe("run", run.stdout + run.stderr, problems, styled=True)

    jsonl = tmp_path / "out" / "hostile.jsonl"
    exported = orchestrator.run("export", "hostile", "--output", str(jsonl))
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    assert len(records) == SLOTS
    _check_csv(tmp_path / "out" / "hostile.csv", records, problems)
    # The payloads did get through (JSON lines keep raw values): the test means something.
    assert {r["service_name"] for r in records} >= {"[/x] Bad", SERVICES[1].name}
    assert COUNTRIES[0].name in {r["country_name"] for r in records}
    assert any(r["code"] for r in records) and any(r["order_id"] for r in records)
    (keyed,) = [r for r in records if "holding the API key" in (r["error"] or "")]
    assert keyed["status"] == "in_doubt" and keyed["order_id"] is None
    _no_key("the JSON lines", jsonl.read_bytes(), problems)

    shown = {"FORCE_COLOR": "1", "COLUMNS": "400"}  # rich believes it is on a terminal
    views: list[tuple[str, ...]] = [("status", "hostile"), ("status",), ("services",)]
    for args in [*views, ("prices", "1003")]:
        result = orchestrator.run(*args, timeout=120, **shown)
        name = " ".join(args)
        if result.returncode != 0:
            problems.append(f"`{name}` exited {result.returncode}: {result.stderr[-400:]!r}")
        _terminal_safe(name, result.stdout + result.stderr, problems, styled=True)
    # --json on a terminal: provider text is inert JSON data (every non-ASCII character a
    # \u escape, so no ESC at all), the names come back whole, the key masked.
    for args in [*views, ("services",), ("prices", "1003"), ("export", "hostile", "-o", "-")]:
        flag = () if args[0] == "export" else ("--json",)
        result = orchestrator.run(*args, *flag, timeout=120, **shown)
        name = " ".join((*args, *flag))
        if result.returncode != 0:
            problems.append(f"`{name}` exited {result.returncode}: {result.stderr[-400:]!r}")
        _terminal_safe(name, result.stdout, problems, styled=flag == ())
    listed = orchestrator.run("services", "--json", timeout=120, **shown)
    names = json.loads(listed.stdout)["services"]
    if [s["name"] for s in names] != [s.name.replace(KEY, "***") for s in SERVICES]:
        problems.append(f"`services --json` did not give the names back: {names!r}")
    services = orchestrator.run("services", timeout=120, **shown).stdout
    if "[/x] Bad" not in services or "[link=http://evil.example]" not in services:
        problems.append(f"`services` did not show the names as text: {services[-600:]!r}")

    report = tmp_path / "report.html"
    made = orchestrator.run("report", "hostile", "--output", str(report))
    assert made.returncode == 0, made.stderr
    page = report.read_text(encoding="utf-8")
    if "=HYPERLINK(&quot;http://x&quot;,&quot;click&quot;)" not in page:
        problems.append("the report does not show the country name, escaped")
    _no_key("the HTML report", page.encode(), problems)

    for table, dump in database_as_text(database_url).items():
        _no_key(f"database table {table}", dump.encode(), problems)

    # A job naming what the provider does not sell: the refusal lists the provider's names.
    bad = write_job(tmp_path, BAD_JOB, "bad.yaml")
    refused = orchestrator.run("run", str(bad))
    if refused.returncode != 2 or "no service has id 999" not in refused.stderr:
        problems.append(f"a bad job was not refused: {refused.returncode} {refused.stderr!r}")
    _terminal_safe("run (bad job)", refused.stdout + refused.stderr, problems)

    hostile.refuse_key = True
    for args in [("services",), ("run", str(job), "--allow-overlap")]:
        result = orchestrator.run(*args)
        name = f"{args[0]} (key refused)"
        if result.returncode != 5:
            problems.append(f"`{name}` exited {result.returncode}: {result.stderr[-400:]!r}")
        _terminal_safe(name, result.stdout + result.stderr, problems)

    assert not problems, "\n".join(problems)


def _terminal_safe(name: str, output: str, problems: list[str], *, styled: bool = False) -> None:
    """No crash, no payload's escape raw, no key; unless ``styled`` (rich's own colours), no
    ESC at all."""
    for crash in ("Traceback", "MarkupError"):
        if crash in output:
            problems.append(f"`{name}` printed a {crash}: {output[-600:]!r}")
    for payload in (RED, "\x1b]8;", C1, "\x7f", "\u202e", "\u2066"):
        if payload in output:
            problems.append(f"`{name}` printed the escape {payload!r} raw")
    if not styled and "\x1b" in output:
        problems.append(f"`{name}` printed an ESC")
    _no_key(f"`{name}`'s output", output.encode(), problems)


def _no_key(where: str, data: bytes, problems: list[str]) -> None:
    for start in range(len(KEY) - FRAGMENT + 1):
        if KEY[start : start + FRAGMENT].encode() in data:
            problems.append(f"{where} holds the API key ({KEY[start : start + FRAGMENT]!r})")
            return


def _neutral(value: str) -> str:
    """What a CSV text cell should hold for a raw value (README: the CSV)."""
    stripped = value.lstrip(" ")
    if stripped[:1] in ("=", "+", "-", "@", "\t", "\r", "\n"):
        plain_number = stripped[1:].replace(".", "", 1).isdigit() and stripped[0] in "+-"
        if not plain_number:
            return "'" + value
    return value


def _check_csv(path: Path, records: list[dict[str, Any]], problems: list[str]) -> None:
    raw = path.read_bytes()
    _no_key("the CSV", raw, problems)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if len(rows) != SLOTS + 1:
        problems.append(f"the CSV reads as {len(rows) - 1} records for {SLOTS} numbers")
        return
    header, *cells = rows
    by_slot = {int(row[header.index("slot")]): dict(zip(header, row, strict=True)) for row in cells}
    neutralised = 0
    for record in records:
        row = by_slot[record["slot"]]
        for column, value in record.items():
            raw_value = "" if value is None else str(value)
            want = _neutral(raw_value) if column in TEXT_COLUMNS else raw_value
            neutralised += want != raw_value
            if row[column] != want:
                problems.append(f"CSV slot {record['slot']} {column}: {row[column]!r} != {want!r}")
    if not neutralised:
        problems.append("no CSV cell needed neutralising: the payloads did not get through")
