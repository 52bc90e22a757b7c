"""``orchestrator report``: one job as a self-contained HTML page with inline SVG charts.

No scripts, no stylesheets or fonts from elsewhere: the page opens from a mail attachment or
an air-gapped share. The numbers behind the charts are embedded as JSON
(``<script type="application/json" id="report-data">``) for anyone who wants to re-plot them.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

from orchestrator.db.models import Job, State
from orchestrator.jobs.export import Row
from orchestrator.money import from_micros
from orchestrator.redact import mask

NO_COUNTRY = "(no country)"  # slots that failed before a country was chosen
SETTLED = frozenset({State.RECEIVED, State.CANCELLED, State.EXPIRED})  # orders with a known end
_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200)
_MAX_BINS = 12


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _money(micros: int | None) -> str | None:
    return None if micros is None else str(from_micros(micros))


@dataclass
class CountryStats:
    """One country's share of a job."""

    country_id: int | None
    country: str
    numbers: int = 0  # slots that chose this country
    orders: int = 0  # of them, orders with a known end (received, cancelled, expired)
    received: int = 0
    spend_micros: int = 0

    @property
    def success_rate(self) -> float | None:
        """Codes received per order that ended; None before any ended."""
        return self.received / self.orders if self.orders else None

    def as_json(self) -> dict[str, Any]:
        rate = self.success_rate
        return {
            "country_id": self.country_id,
            "country": self.country,
            "numbers": self.numbers,
            "orders": self.orders,
            "received": self.received,
            "spend": str(from_micros(self.spend_micros)),
            "success_rate": None if rate is None else round(rate, 4),
        }


@dataclass
class Report:
    """Everything the page shows, computed from one job's rows."""

    job: Job
    counts: dict[State, int]
    spend_micros: int
    countries: list[CountryStats]
    arrivals: list[float]  # seconds from order to code, one per received code, sorted
    bins: list[tuple[float, float, int]] = field(default_factory=list)  # (from, to, count)

    def as_json(self) -> dict[str, Any]:
        job = self.job
        return {
            "job": {
                "id": job.id,
                "name": job.name,
                "status": job.status.value,
                "created_at": _iso(job.created_at),
                "finished_at": _iso(job.finished_at),
                "budget": _money(job.budget_micros),
                "spend": str(from_micros(self.spend_micros)),
                "numbers": sum(self.counts.values()),
                "counts": {state.value: n for state, n in self.counts.items()},
            },
            "countries": [c.as_json() for c in self.countries],
            "arrival_seconds": self.arrivals,
            "arrival_histogram": [{"from": a, "to": b, "count": n} for a, b, n in self.bins],
        }


def build_report(
    job: Job, rows: Iterable[Row], spend_by_country: Mapping[int | None, int]
) -> Report:
    """Tally the job's slots (``queries.export_rows``) by state and country; the spend is the
    database's (``queries.spend_micros_by_country``)."""
    counts = dict.fromkeys(State, 0)
    countries: dict[int | None, CountryStats] = {}
    arrivals: list[float] = []
    for _, _, act in rows:
        counts[act.state] += 1
        name = act.country_name or (str(act.country_id) if act.country_id else NO_COUNTRY)
        stats = countries.setdefault(act.country_id, CountryStats(act.country_id, name))
        stats.numbers += 1
        stats.orders += act.state in SETTLED
        stats.received += act.state is State.RECEIVED
        if act.state is State.RECEIVED and act.code_at and act.ordered_at:
            arrivals.append(round((act.code_at - act.ordered_at).total_seconds(), 1))
    arrivals.sort()
    for country_id, stats in countries.items():
        stats.spend_micros = spend_by_country.get(country_id, 0)
    ordered = sorted(countries.values(), key=lambda c: (-c.spend_micros, -c.numbers, c.country))
    return Report(
        job=job,
        counts=counts,
        spend_micros=sum(c.spend_micros for c in ordered),
        countries=ordered,
        arrivals=arrivals,
        bins=histogram(arrivals),
    )


def histogram(values: Sequence[float]) -> list[tuple[float, float, int]]:
    """At most a dozen equal bins from 0, each a round number of seconds wide."""
    if not values:
        return []
    top = max(*values, 0.1)
    width = next((s for s in _STEPS if top / s <= _MAX_BINS), math.ceil(top / _MAX_BINS))
    count = max(1, math.ceil(top / width))  # the maximum itself goes in the last bin
    bins = [[round(i * width, 1), round((i + 1) * width, 1), 0] for i in range(count)]
    for value in values:
        bins[min(int(value // width), count - 1)][2] += 1
    return [(float(a), float(b), int(n)) for a, b, n in bins]


# --- rendering -----------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 760px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { padding: 0.2rem 0.8rem; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 0 0 1.5rem; }
svg text { font: 12px system-ui, sans-serif; fill: #333; }
.muted { color: #777; }
"""


def _svg(width: int, height: int, label: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def bar_chart(
    label: str, items: Sequence[tuple[str, float, str]], colour: str, *, full: float | None = None
) -> str:
    """Horizontal bars: (name, value, value as shown) per row; ``full`` (default: the largest
    value) spans the whole width."""
    row, left, span, width = 26, 170, 400, 660
    if not items:
        return _svg(width, row, label, [f'<text x="0" y="17">{escape("nothing yet")}</text>'])
    top = full or max(value for _, value, _ in items) or 1.0
    body = []
    for i, (name, value, shown) in enumerate(items):
        y = i * row
        length = round(span * value / top, 1)
        body.append(
            f'<text x="{left - 8}" y="{y + 17}" text-anchor="end">{escape(name[:28])}</text>'
            f'<rect x="{left}" y="{y + 4}" width="{length}" height="{row - 8}" fill="{colour}">'
            f"<title>{escape(f'{name}: {shown}')}</title></rect>"
            f'<text x="{left + length + 6}" y="{y + 17}">{escape(shown)}</text>'
        )
    return _svg(width, row * len(items), label, body)


def arrival_chart(bins: Sequence[tuple[float, float, int]]) -> str:
    """Vertical bars: how many codes arrived within each span of seconds after the order."""
    label, width, height, base, left = "code arrival times", 660, 240, 200, 40
    if not bins:
        return _svg(width, 26, label, ['<text x="0" y="17">no codes received</text>'])
    top = max(n for _, _, n in bins) or 1
    step = (width - left) / len(bins)
    body = [
        f'<line x1="{left}" y1="{base}" x2="{width}" y2="{base}" stroke="#999"></line>',
        f'<text x="{left - 6}" y="{base - 170}" text-anchor="end">{top}</text>',
        f'<text x="{left - 6}" y="{base}" text-anchor="end">0</text>',
        f'<text x="{width}" y="{height - 4}" text-anchor="end">seconds from order to code</text>',
    ]
    for i, (start, end, n) in enumerate(bins):
        x, h = left + i * step, round(170 * n / top, 1)
        body.append(
            f'<rect x="{x + 2:.1f}" y="{base - h}" width="{step - 4:.1f}" height="{h}" '
            f'fill="#4e79a7"><title>{start:g}-{end:g} s: {n}</title></rect>'
            f'<text x="{x + step / 2:.1f}" y="{base + 16}" text-anchor="middle">{start:g}</text>'
        )
    return _svg(width, height, label, body)


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[object]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header or ())
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in rows
    )
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _percent(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.0%}"


def _summary(report: Report) -> str:
    job, c = report.job, report.counts
    orders = sum(c[s] for s in SETTLED)
    median = f"{statistics.median(report.arrivals):g} s" if report.arrivals else "-"
    budget = "none" if job.budget_micros is None else str(from_micros(job.budget_micros))
    return _table(
        None,
        [
            ("status", job.status.value),
            ("submitted (UTC)", _iso(job.created_at) or "-"),
            ("finished (UTC)", _iso(job.finished_at) or "-"),
            ("numbers", sum(c.values())),
            *((state.value, c[state]) for state in State if c[state]),
            ("success rate", _percent(c[State.RECEIVED] / orders if orders else None)),
            ("median code arrival", median),
            ("spent", str(from_micros(report.spend_micros))),
            ("budget", budget),
        ],
    )


def render_html(report: Report, *, generated: datetime) -> str:
    """The whole page, as one string; any registered secret in it masked (it quotes the
    provider's country names, which are escaped for HTML like every value)."""
    job = report.job
    title = f"Job {job.id} ({job.name})"
    spend = [
        (c.country, float(from_micros(c.spend_micros)), str(from_micros(c.spend_micros)))
        for c in report.countries
    ]
    success = [
        (c.country, c.success_rate, f"{_percent(c.success_rate)} of {c.orders}")
        for c in report.countries
        if c.success_rate is not None
    ]
    success_chart = bar_chart("success rate by country", success, "#59a14f", full=1.0)
    per_country = _table(
        ("country", "numbers", "orders ended", "received", "success", "spent"),
        [
            (
                c.country,
                c.numbers,
                c.orders,
                c.received,
                _percent(c.success_rate),
                str(from_micros(c.spend_micros)),
            )
            for c in report.countries
        ],
    )
    data = json.dumps(report.as_json(), ensure_ascii=False, sort_keys=True)
    # Inside <script>, "</script>" or "<!--" in a job or country name would end the block early.
    data = data.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}: LegitSMS orchestrator report</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f"<h1>{escape(title)}</h1>",
            f'<p class="muted">generated {escape(_iso(generated) or "")}</p>',
            _summary(report),
            "<h2>Spend by country</h2>",
            f"<figure>{bar_chart('spend by country', spend, '#e15759')}</figure>",
            "<h2>Success rate by country</h2>",
            f"<figure>{success_chart}</figure>",
            "<h2>Code arrival times</h2>",
            f"<figure>{arrival_chart(report.bins)}</figure>",
            "<h2>By country</h2>",
            per_country,
            f'<script type="application/json" id="report-data">{data}</script>',
            "</body>",
            "</html>",
            "",
        ]
    )
    return mask(page)
