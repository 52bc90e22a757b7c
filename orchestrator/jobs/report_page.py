"""``orchestrator report``'s page: one self-contained HTML file from a ``Report``.

No script runs and nothing is loaded from elsewhere (a Content-Security-Policy says so to the
browser too): the page opens from a mail attachment or an air-gapped share. The figures are
embedded as JSON (``<script type="application/json" id="report-data">``) for anyone who wants
to re-plot them. Every value that may come from the provider is escaped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from html import escape

from orchestrator.db.models import State
from orchestrator.durations import format_duration
from orchestrator.jobs.report import Report, money
from orchestrator.jobs.report_charts import (
    COLOURS,
    NARROW,
    WIDE,
    arrival_chart,
    bar_chart,
    timeline_chart,
)
from orchestrator.money import from_micros
from orchestrator.redact import mask

# Laptop first: two columns of charts from 1100 px on, one below; tables scroll inside their
# card rather than widen the page on a phone.
_CSS = """
* { box-sizing: border-box; }
body { margin: 0; background: #f5f6f8; color: #222;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 1.25rem clamp(0.6rem, 2.5vw, 2rem) 2rem; }
h1 { font-size: 1.45rem; margin: 0 0 0.2rem; overflow-wrap: anywhere; }
h2 { font-size: 1.02rem; margin: 0 0 0.6rem; }
p { margin: 0.2rem 0; }
.muted { color: #5f6368; }
.status { display: inline-block; font-size: 0.8rem; font-weight: 600; padding: 0.1rem 0.55rem;
  border-radius: 999px; background: #e8eef6; color: #2b4c73; vertical-align: middle; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 145px), 1fr));
  gap: 0.7rem; margin: 1rem 0; }
.tile, section { background: #fff; border: 1px solid #e1e4e8; border-radius: 8px; min-width: 0; }
.tile { padding: 0.55rem 0.8rem; }
.tile b { display: block; font-size: 1.3rem; font-variant-numeric: tabular-nums; }
.tile span { color: #5f6368; font-size: 0.84rem; }
.grid { display: grid; gap: 0.9rem;
  grid-template-columns: repeat(auto-fit, minmax(min(100%, 520px), 1fr)); }
section { padding: 0.9rem 1rem; }
.wide { grid-column: 1 / -1; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 0.3rem 0.6rem; border-bottom: 1px solid #eceef1; text-align: right;
  white-space: nowrap; }
th { font-weight: 600; color: #444; font-size: 0.9rem; }
tfoot td { font-weight: 600; border-bottom: 0; }
/* Words wrap; a provider's name or error that is one long word breaks, but a column of
   words is never squeezed below 8rem (which would break short names mid-word). */
.text { text-align: left; white-space: normal; overflow-wrap: anywhere; min-width: 8rem; }
@media (max-width: 640px) { th, td { padding: 0.3rem 0.4rem; } }
svg { display: block; width: 100%; height: auto; }
.wide-chart svg { max-width: 760px; }
.narrow-chart { display: none; }
@media (max-width: 640px) { .wide-chart { display: none; } .narrow-chart { display: block; } }
svg text { font: 13px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; fill: #333; }
svg .axis-title, svg .muted { fill: #5f6368; }
svg .mark { font-weight: 600; }
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'"


def when(value: datetime | None) -> str:
    """A moment for people: ``2026-11-26 14:43:14 UTC``."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def _money(micros: int | None) -> str:
    return money(micros) or "-"


def _cells(row: Sequence[object], texts: int, tag: str = "td") -> str:
    """A row whose first ``texts`` cells are words (left-aligned, wrapped), the rest figures."""
    return "".join(
        f"<{tag}{' class=text' if i < texts else ''}>{escape(str(cell))}</{tag}>"
        for i, cell in enumerate(row)
    )


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    texts: int = 1,
    total: Sequence[object] | None = None,
) -> str:
    """A table that scrolls sideways inside its card when the screen is narrower than it."""
    head = _cells(header, texts, "th")
    body = "".join(f"<tr>{_cells(row, texts)}</tr>" for row in rows)
    foot = f"<tfoot><tr>{_cells(total, texts)}</tr></tfoot>" if total else ""
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody>{foot}</table></div>"
    )


def _tiles(report: Report) -> str:
    job, c = report.job, report.counts
    spent = _money(report.spend_micros)
    if job.budget_micros:
        budget = f"of {_money(job.budget_micros)} budget ({_percent(report.budget_used)} used)"
    else:
        budget = "no budget set"
    bought = sum(g.bought for g in report.groups)
    p50, p95 = report.arrival(0.5), report.arrival(0.95)
    tiles = [
        (str(sum(c.values())), f"numbers, {bought} bought"),
        (str(c[State.RECEIVED]), f"codes, success rate {_percent(report.success_rate)}"),
        (spent, budget),
        (_money(report.refunded_micros), f"refunded, {c[State.CANCELLED]} cancelled"),
        (_money(report.cost_per_code_micros), "per code (refunds deducted)"),
        (
            "-" if p50 is None or p95 is None else f"{p50:g} s / {p95:g} s",
            "code arrival p50 / p95",
        ),
        (
            "running" if report.duration is None else format_duration(round(report.duration)),
            "job duration, to the last number's end",
        ),
    ]
    if c[State.IN_DOUBT]:
        tiles.append((str(c[State.IN_DOUBT]), "in doubt: see orchestrator status"))
    return (
        '<div class="tiles">'
        + "".join(
            f'<div class="tile"><b>{escape(value)}</b><span>{escape(caption)}</span></div>'
            for value, caption in tiles
        )
        + "</div>"
    )


def _by_group(report: Report) -> str:
    rows = [
        (
            g.service,
            g.country,
            g.numbers,
            g.bought,
            g.received,
            _percent(g.success_rate),
            _money(g.spend_micros),
            _money(g.refunded_micros),
            _money(g.cost_per_code_micros),
        )
        for g in report.groups
    ]
    c = report.counts
    total = (
        "all",
        "",
        sum(c.values()),
        sum(g.bought for g in report.groups),
        c[State.RECEIVED],
        _percent(report.success_rate),
        _money(report.spend_micros),
        _money(report.refunded_micros),
        _money(report.cost_per_code_micros),
    )
    header = ("service", "country", "numbers", "bought", "codes", "success rate", "spent")
    return table(
        (*header, "refunded", "per code"), rows, texts=2, total=total if len(rows) > 1 else None
    )


def _charts(report: Report) -> list[tuple[str, Callable[[int], str]]]:
    """(heading, chart at a width) for the grid of charts."""
    groups = [(f"{g.service} \u00b7 {g.country}", g) for g in report.groups]
    money_rows = [
        (
            name,
            [
                (float(from_micros(g.spend_micros)), COLOURS["spend"]),
                (float(from_micros(g.refunded_micros)), COLOURS["refunded"]),
            ],
            f"{_money(g.spend_micros)} + {_money(g.refunded_micros)}",
        )
        for name, g in groups
        if g.spend_micros or g.refunded_micros
    ]
    success_rows = [
        (name, [(g.success_rate, COLOURS["success"])], f"{_percent(g.success_rate)} of {g.orders}")
        for name, g in groups
        if g.success_rate is not None
    ]
    key = [(COLOURS["spend"], "spent"), (COLOURS["refunded"], "refunded")]
    timeline = report.timeline
    series = [
        ("bought", COLOURS["bought"], timeline.bought),
        ("codes", COLOURS["codes"], timeline.codes),
        ("cancelled", COLOURS["cancelled"], timeline.cancelled),
    ]
    span = report.duration or timeline.last
    p50, p95 = report.arrival(0.5), report.arrival(0.95)
    return [
        (
            "Spent and refunded by service and country",
            lambda w: bar_chart(w, "spent and refunded", money_rows, key=key),
        ),
        (
            "Success rate by service and country (codes per order ended)",
            lambda w: bar_chart(w, "success rate", success_rows, full=1.0),
        ),
        ("Code arrival", lambda w: arrival_chart(w, report.bins, p50, p95)),
        ("Timeline", lambda w: timeline_chart(w, series, span)),
    ]


def _section(heading: str, chart: Callable[[int], str]) -> str:
    """A chart drawn twice, for a laptop's column and for a phone: CSS shows one."""
    return (
        f"<section><h2>{escape(heading)}</h2>"
        f'<div class="wide-chart">{chart(WIDE)}</div>'
        f'<div class="narrow-chart">{chart(NARROW)}</div></section>'
    )


def _failures(report: Report) -> str:
    if not report.failures:
        return '<p class="muted">every number that ended got its code</p>'
    rows = [(why, state, n) for state, why, n in report.failures]
    return table(("why", "ended", "numbers"), rows, texts=2)


def _states(report: Report) -> str:
    return table(("state", "numbers"), [(s.value, n) for s, n in report.counts.items() if n])


def _embedded(report: Report) -> str:
    data = json.dumps(report.as_json(), ensure_ascii=False, sort_keys=True)
    # Inside <script>, "</script>" or "<!--" in a name would end the block early.
    data = data.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return f'<script type="application/json" id="report-data">{data}</script>'


def render_html(report: Report, *, generated: datetime) -> str:
    """The whole page, as one string; any registered secret in it masked."""
    job = report.job
    title = f"{job.name}: job {job.id}"
    ended = f"finished {when(job.finished_at)}" if job.finished_at else "still running"
    sections = [_section(heading, chart) for heading, chart in _charts(report)]
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}: LegitSMS orchestrator report</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            "<main>",
            f'<h1>{escape(title)} <span class="status">{escape(job.status.value)}</span></h1>',
            f'<p class="muted">submitted {when(job.created_at)}, {ended}; '
            f"report generated {when(generated)}</p>",
            _tiles(report),
            '<div class="grid">',
            f'<section class="wide"><h2>By service and country</h2>{_by_group(report)}</section>',
            *sections,
            f"<section><h2>Why numbers got no code</h2>{_failures(report)}</section>",
            f"<section><h2>Numbers by state</h2>{_states(report)}</section>",
            "</div>",
            "</main>",
            _embedded(report),
            "</body>",
            "</html>",
            "",
        ]
    )
    return mask(page)
