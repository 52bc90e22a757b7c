"""The HTML report: one self-contained page whose figures match the database and the
simulator's books, whose provider text stays text, and which lays out without sideways
overflow at a laptop's and a phone's width (in Chromium, when it is installed)."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.cli.watch import read_progress
from orchestrator.db.models import Activation, Job, JobStatus, State, Target
from orchestrator.jobs.report import build_report, failure_reason, histogram
from orchestrator.jobs.report_charts import NARROW, WIDE, arrival_chart, timeline_chart
from orchestrator.jobs.report_page import render_html
from orchestrator.sandbox.server import SandboxServer
from tests.conftest import FAST_PROVIDER
from tests.support import Orchestrator, write_job

MIX = """\
name: mix
budget: 30.00
code_timeout: 4s
targets:
  - service: Telegram
    countries: [United Kingdom, United States]
    codes: 3
    max_price: 2.00
  - service: 924
    countries: [16, 1]
    quantity: 6
    max_price: 0.50
  - service: Whatsapp
    country: United Kingdom
    quantity: 2
    max_price: 1.50
"""
NOW = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)
HOSTILE = "</script><script>alert(1)</script><!--&<b>"


class _Checker(HTMLParser):
    """Fails on any closing tag that does not match the last open one, on a script that could
    run and on anything loaded from elsewhere; keeps the JSON data blocks."""

    VOID = frozenset({"meta", "br", "img", "hr", "link", "input", "col", "area", "base", "wbr"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.seen: Counter[str] = Counter()
        self.doctype = ""
        self.data: dict[str, str] = {}
        self._script_id: str | None = None

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen[tag] += 1
        attributes = dict(attrs)
        if tag == "script":
            self._script_id = attributes.get("id")
            assert attributes.get("type") == "application/json", "no executable script"
            assert "src" not in attributes
        assert tag not in {"link", "img", "iframe", "object"}, f"<{tag}> loads something"
        assert not any(name.startswith("on") for name in attributes), f"a handler on <{tag}>"
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen[tag] += 1

    def handle_endtag(self, tag: str) -> None:
        assert self.open, f"</{tag}> closes nothing"
        assert self.open[-1] == tag, f"</{tag}> closes <{self.open[-1]}>"
        self.open.pop()
        if tag == "script":
            self._script_id = None

    def handle_data(self, data: str) -> None:
        if self._script_id:
            self.data[self._script_id] = self.data.get(self._script_id, "") + data


def check_page(page: str) -> dict[str, Any]:
    """Parse the page strictly; return its embedded figures."""
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.doctype.lower() == "doctype html"
    assert not checker.open, f"never closed: {checker.open}"
    assert checker.seen["html"] == 1
    assert checker.seen["svg"] == 8, "four charts, each drawn for a laptop and for a phone"
    assert "default-src 'none'" in page, "the browser is told to load nothing"
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg\")", page), "no address elsewhere"
    data: dict[str, Any] = json.loads(checker.data["report-data"])
    return data


def _slot(slot: int, state: State, country: int | None, name: str | None, **fields: Any) -> Any:
    return Activation(
        id=slot + 1,
        job_id=5,
        target_id=1,
        slot=slot,
        service_id=1,
        state=state,
        country_id=country,
        country_name=name,
        **fields,
    )


def _crafted_rows(names: list[str], error: str) -> tuple[Job, list[Any]]:
    """A finished job of 4 slots per country name: a code, a refund, an expiry, a failure."""
    job = Job(
        id=5,
        name="night-1",
        source="",
        code_timeout=60,
        created_at=NOW,
        budget_micros=10_000_000,
        status=JobStatus.FINISHED,
        finished_at=NOW + timedelta(minutes=3),
    )
    target = Target(
        id=1, job_id=5, position=0, service_id=1, service_name=HOSTILE, countries="[]", quantity=8
    )
    rows: list[Any] = []
    for i, name in enumerate(names):
        ordered = NOW + timedelta(seconds=10 * i)
        bought = {"ordered_at": ordered, "cost_micros": 1_250_000}
        code_at, ended = ordered + timedelta(seconds=4 + i), ordered + timedelta(seconds=60)
        acts = [
            _slot(4 * i, State.RECEIVED, 9 + i, name, code_at=code_at, **bought),
            _slot(4 * i + 1, State.CANCELLED, 9 + i, name, finished_at=ended, **bought),
            _slot(4 * i + 2, State.EXPIRED, 9 + i, name, error=error, **bought),
            _slot(4 * i + 3, State.FAILED, None, None, error=error),
        ]
        rows += [(job, target, act) for act in acts]
    return job, rows


def test_the_report_keeps_names_and_errors_it_did_not_write_as_text() -> None:
    error = f"provider said {HOSTILE}"
    job, rows = _crafted_rows([HOSTILE], error)
    money: dict[tuple[int, int | None], tuple[int, int]] = {(1, 9): (2_500_000, 1_250_000)}

    page = render_html(build_report(job, rows, money), generated=NOW)

    data = check_page(page)
    assert "<script>alert" not in page and "&<b>" not in page
    assert page.count("</script>") == 1, "only the data block's own end"
    assert "<!--" not in page
    assert html.escape(HOSTILE) in page, "shown, as text"
    (group, _) = data["groups"]
    assert group["country"] == HOSTILE and group["service"] == HOSTILE
    assert (group["spend"], group["refunded"], group["cost_per_code"]) == ("2.50", "1.25", "2.50")
    assert {(f["state"], f["reason"]) for f in data["failures"]} == {
        ("cancelled", "no code in time"),
        ("expired", error),
        ("failed", error),
    }
    assert data["job"]["duration_seconds"] == 180.0
    assert Decimal(data["job"]["refunded"]) > 0
    assert any(f["reason"] == "no code in time" for f in data["failures"])
    assert data["job"]["budget_used"] == 0.25
    assert (data["arrival"]["seconds"], data["arrival"]["p50"], data["arrival"]["p95"]) == (
        [4.0],
        4.0,
        4.0,
    )
    assert data["timeline"] == {"bought": [0.0, 0.0, 0.0], "codes": [4.0], "cancelled": [60.0]}


def test_why_a_number_got_no_code_is_said_in_the_readmes_words() -> None:
    assert failure_reason(State.CANCELLED, "timeout", None) == "no code in time"
    assert failure_reason(State.CANCELLED, None, None) == "no code in time"
    assert failure_reason(State.CANCELLED, "target_met", None) == (
        "not needed: the target had its codes"
    )
    assert failure_reason(State.CANCELLED, "unusable_cost", "cost 'x'") == "cost 'x'"
    assert failure_reason(State.FAILED, None, None) == "no reason recorded"
    assert failure_reason(State.RECEIVED, None, None) is None
    assert failure_reason(State.WAITING, None, None) is None


def test_a_job_just_submitted_is_reported_running_with_nothing_to_chart() -> None:
    job = Job(id=6, name="fresh", source="", code_timeout=60, created_at=NOW)
    target = Target(
        id=1, job_id=6, position=0, service_id=1, service_name="T", countries="[]", quantity=3
    )
    rows = [(job, target, _slot(i, State.PLANNED, None, None)) for i in range(3)]

    page = render_html(build_report(job, rows, {}), generated=NOW)

    data = check_page(page)
    assert "<b>running</b>" in page and "still running" in page
    assert "nothing was bought" in page and "no codes received" in page
    assert data["job"]["duration_seconds"] is None and data["job"]["budget_used"] is None
    assert data["job"]["success_rate"] is None and data["job"]["cost_per_code"] is None
    assert data["failures"] == [] and data["timeline"]["bought"] == []


def test_the_arrival_histogram_labels_its_bin_edges_and_counts_in_round_steps() -> None:
    bins = histogram([0.6, 0.7, 2.6, 2.7, 2.8, 3.2] + [0.9] * 37)

    wide, narrow = (arrival_chart(w, bins, 0.9, 3.2) for w in (WIDE, NARROW))

    def edges(chart: str) -> list[str]:
        return re.findall(r'text-anchor="middle">([\d.]+)</text>', chart)

    assert edges(wide) == ["0", "0.5", "1", "1.5", "2", "2.5", "3", "3.5"]
    assert edges(narrow) == ["0", "1", "2", "3"], "every other edge where space is short"
    counts = re.findall(r'text-anchor="end">(\d+)</text>', wide)
    assert counts == ["0", "10", "20", "30", "40"], "39 codes in the highest bin"
    assert "p50 0.9 s" in wide and "p95 3.2 s" in wide


def test_a_big_jobs_timeline_is_drawn_with_at_most_one_step_per_unit_of_width() -> None:
    bought = [i / 100 for i in range(10_000)]  # 10,000 numbers in 100 s

    chart = timeline_chart(WIDE, [("bought", "#000", bought)], 100.0)

    found = re.search(r'<polyline points="([^"]*)"', chart)
    assert found
    points = [tuple(map(float, p.split(","))) for p in found[1].split()]
    assert len(points) <= 2 * WIDE + 2
    tops = re.findall(r'<text x="[\d.]+" y="[\d.]+" text-anchor="end">(\d+)</text>', chart)
    assert tops[-1] == "10000", "the y axis reaches the total"
    assert points[-1][1] == min(y for _, y in points), "the line ends at the total"


# --- a real job: the CLI, the simulator, Redis and the database ---------------------------


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    """The fast simulator, where half the orders never get a code: the job has refunds (all
    of its 9 or more orders get a code twice in a thousand runs)."""
    with SandboxServer(replace(FAST_PROVIDER, never_ratio=0.5)) as server:
        yield server


def _nearest_rank(values: list[float], share: float) -> float:
    return values[max(0, math.ceil(share * len(values)) - 1)]


def _money(amount: Decimal | int) -> str:
    return str(Decimal(amount).quantize(Decimal("0.01")))


@pytest.mark.slow
def test_the_report_of_a_real_job_matches_the_database_and_the_providers_books(
    orchestrator: Orchestrator, sandbox: SandboxServer, tmp_path: Path
) -> None:
    ran = orchestrator.run("run", str(write_job(tmp_path, MIX)), "--quiet", timeout=150)
    assert ran.returncode in (ExitCode.OK, ExitCode.INCOMPLETE), ran.stderr

    result = orchestrator.run("report", "mix", "--output", "reports/mix.html")

    assert result.returncode == 0, result.stderr
    data = check_page((tmp_path / "reports" / "mix.html").read_text(encoding="utf-8"))
    with Session(orchestrator.engine) as session:
        job = session.execute(select(Job)).scalar_one()
        slots = session.execute(
            select(Activation, Target)
            .join(Target, col(Target.id) == col(Activation.target_id))
            .where(col(Activation.job_id) == job.id)
        ).all()
    expected: dict[tuple[int, int | None], Counter[str]] = defaultdict(Counter)
    spend: dict[tuple[int, int | None], Decimal] = defaultdict(Decimal)
    refunded: dict[tuple[int, int | None], Decimal] = defaultdict(Decimal)
    no_code: Counter[str] = Counter()
    arrivals, start = [], job.created_at
    timeline: dict[str, list[float]] = {"bought": [], "codes": [], "cancelled": []}
    for act, target in slots:
        key = (target.service_id, act.country_id)
        expected[key]["numbers"] += 1
        expected[key]["bought"] += act.ordered_at is not None
        expected[key]["received"] += act.state is State.RECEIVED
        cost = Decimal(act.cost_micros or 0) / 1_000_000
        if act.state is State.CANCELLED:
            refunded[key] += cost
            timeline["cancelled"].append(round((act.finished_at - start).total_seconds(), 1))
        else:
            spend[key] += cost
        if act.ordered_at:
            timeline["bought"].append(round((act.ordered_at - start).total_seconds(), 1))
        if act.state is State.RECEIVED:
            arrivals.append(round((act.code_at - act.ordered_at).total_seconds(), 1))
            timeline["codes"].append(round((act.code_at - start).total_seconds(), 1))
        elif act.state in {State.CANCELLED, State.EXPIRED, State.FAILED, State.IN_DOUBT}:
            no_code[act.state.value] += 1

    groups = {(g["service_id"], g["country_id"]): g for g in data["groups"]}
    assert set(groups) == set(expected)
    for key, group in groups.items():
        assert group["numbers"] == expected[key]["numbers"], key
        assert group["bought"] == expected[key]["bought"], key
        assert group["received"] == expected[key]["received"], key
        assert Decimal(group["spend"]) == spend[key], key
        assert Decimal(group["refunded"]) == refunded[key], key
        codes = expected[key]["received"]
        per_code = _money(spend[key] / codes) if codes else None
        assert group["cost_per_code"] == per_code, key
    assert {g["service"] for g in data["groups"]} == {"Telegram", "Tiktok/Douyin", "Whatsapp"}
    whatsapp = groups[(1012, None)]
    assert (whatsapp["numbers"], whatsapp["bought"]) == (2, 0), "above the cap: never bought"
    assert any("above the cap 1.50" in f["reason"] for f in data["failures"])
    by_state = Counter[str]()
    for failure in data["failures"]:
        by_state[failure["state"]] += failure["numbers"]
    assert by_state == no_code

    # The money, against the CLI's own figure and against what the simulator charged back.
    books = sandbox.ledger.snapshot(time.time())["orders"]
    assert Decimal(data["job"]["spend"]) == read_progress(orchestrator.engine, job.id).spend
    assert Decimal(data["job"]["spend"]) == sum(
        (Decimal(o["cost"]) for o in books if not o["refunded"]), Decimal(0)
    )
    assert Decimal(data["job"]["refunded"]) == sum(
        (Decimal(o["cost"]) for o in books if o["refunded"]), Decimal(0)
    )
    assert Decimal(data["job"]["refunded"]) > 0
    assert any(f["reason"] == "no code in time" for f in data["failures"])
    assert data["job"]["budget_used"] == round(float(data["job"]["spend"]) / 30, 4)
    assert job.finished_at is not None
    assert data["job"]["duration_seconds"] == (job.finished_at - start).total_seconds()

    arrivals.sort()
    assert data["arrival"]["seconds"] == arrivals
    assert data["arrival"]["p50"] == _nearest_rank(arrivals, 0.5)
    assert data["arrival"]["p95"] == _nearest_rank(arrivals, 0.95)
    assert sum(b["count"] for b in data["arrival"]["histogram"]) == len(arrivals)
    assert data["timeline"] == {name: sorted(times) for name, times in timeline.items()}


# --- the layout, in a real browser ---------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _scroll_width(page: str, width: int, folder: Path) -> tuple[int, int]:
    """The page's scrollWidth and viewport width in Chromium at ``width`` CSS pixels.

    Headless Chromium keeps its window at least 500 px wide, so the page is laid out in an
    iframe of that width (``srcdoc``: same origin, so the outer page may measure it). The
    outer page writes the figures into its DOM, which ``--dump-dom`` prints."""
    probe = (
        '<!DOCTYPE html><html><body style="margin:0">'
        f'<iframe id="f" style="width:{width}px;height:900px;border:0" '
        f'srcdoc="{html.escape(page)}"></iframe><script>'
        'addEventListener("load", () => { const w = document.getElementById("f").contentWindow;'
        ' document.body.dataset.probe = w.document.documentElement.scrollWidth + " " +'
        " w.innerWidth; });</script></body></html>"
    )
    path = folder / f"probe-{width}.html"
    path.write_text(probe, encoding="utf-8")
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={folder / 'profile'}", f"--window-size={width + 40},900",
            "--dump-dom", path.as_uri(),
        ],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    found = re.search(r'data-probe="(\d+) (\d+)"', result.stdout)
    assert found, f"no measure from Chromium: {result.returncode} {result.stderr[-800:]}"
    return int(found[1]), int(found[2])


@pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("REQUIRE_CHROMIUM"),
    reason="Chromium is not installed",
)
@pytest.mark.parametrize("width", [1280, 390])
def test_the_report_lays_out_without_sideways_overflow_on_a_laptop_and_a_phone(
    width: int, tmp_path: Path
) -> None:
    long_name = "Republic of " + "Very" * 30 + " Long Name"
    unbroken = "no_stock_" + "x" * 300  # one word wider than any phone
    job, rows = _crafted_rows([HOSTILE, long_name, "United Kingdom", "Canada"], unbroken)
    money: dict[tuple[int, int | None], tuple[int, int]] = {
        (1, 9 + i): (1_250_000 * (i + 1), 1_250_000) for i in range(4)
    }
    page = render_html(build_report(job, rows, money), generated=NOW)
    too_wide = page.replace("<main>", '<main><div style="width:1400px">wide</div>', 1)

    scrolled, viewport = _scroll_width(page, width, tmp_path)
    overflowing, _ = _scroll_width(too_wide, width, tmp_path)

    assert viewport == width
    assert scrolled <= viewport, f"the page is {scrolled} px wide in a {viewport} px window"
    assert overflowing > viewport, "the probe sees an element too wide for the window"
