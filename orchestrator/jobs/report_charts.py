"""The report's charts, drawn here as inline SVG: the page runs no script and loads nothing.

Each chart is drawn at a width in ``viewBox`` units that the page scales to its column: ``WIDE``
is about one pixel a unit in a laptop's two columns, ``NARROW`` on a phone, so the text stays
legible on both. Every name in them is escaped: names come from the provider.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

from orchestrator.durations import format_duration

WIDE, NARROW = 600, 340
# One colour per meaning, used by the charts and the page alike. Spend is a neutral blue, not
# an alarm red: money spent on codes is the job working.
COLOURS = {
    "spend": "#4e79a7",
    "refunded": "#9ecae9",
    "success": "#59a14f",
    "bought": "#4e79a7",
    "codes": "#59a14f",
    "cancelled": "#e8a33d",
    "grid": "#e6e6e6",
    "axis": "#8a8a8a",
}
_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
_NAME_CHARS = 26
_LEFT, _RIGHT = 40, 16  # room for the y axis's labels; the last x label's overhang


def svg(width: int, height: float, label: str, body: Sequence[str]) -> str:
    """One chart: scaled to its column, named for screen readers."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height:g}" '
        f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f"{''.join(body)}</svg>"
    )


def _text(x: float, y: float, text: str, anchor: str = "start", cls: str = "") -> str:
    css = f' class="{cls}"' if cls else ""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{css}>{escape(text)}</text>'


def _line(x1: float, y1: float, x2: float, y2: float, colour: str, dash: str = "") -> str:
    dashes = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
        f'stroke="{colour}"{dashes}></line>'
    )


def _short(name: str) -> str:
    return name if len(name) <= _NAME_CHARS else name[: _NAME_CHARS - 1] + "\u2026"


def scale(top: float, at_zero: float, at_top: float) -> Callable[[float], float]:
    """Where a value from 0 to ``top`` is drawn, from ``at_zero`` to ``at_top`` units."""
    return lambda value: at_zero + (at_top - at_zero) * min(value, top) / top


def count_ticks(top: float, most: int = 5) -> list[float]:
    """Round values from 0 to at least ``top``, 1, 2 or 5 times a power of ten apart (whole
    numbers: these are counts)."""
    raw = max(top, 1) / most
    power = 10 ** math.floor(math.log10(raw))
    step = max(1.0, next(m * power for m in (1, 2, 5, 10) if m * power >= raw))
    return [i * step for i in range(math.ceil(max(top, 1) / step) + 1)]


def time_ticks(span: float, most: int = 6) -> list[float]:
    """Round moments from 0 to ``span`` seconds: 10s, 1m, 5m... apart, at most ``most`` + 1."""
    step = next((s for s in _TIME_STEPS if span / s <= most), math.ceil(span / most / 3600) * 3600)
    return [i * step for i in range(math.floor(span / step) + 1)]


def legend(
    x: float, y: float, width: int, items: Sequence[tuple[str, str]]
) -> tuple[list[str], float]:
    """Coloured squares with their names, left to right, on as many rows of 16 units as the
    width needs; and the baseline of the last row."""
    body, start = [], x
    for colour, name in items:
        wide = 24 + 7.2 * len(name)
        if x + wide > width and x > start:
            x, y = start, y + 16
        body.append(
            f'<rect x="{x:.1f}" y="{y - 10:.1f}" width="10" height="10" fill="{colour}"></rect>'
        )
        body.append(_text(x + 14, y, name))
        x += wide
    return body, y


def bar_chart(
    width: int,
    label: str,
    rows: Sequence[tuple[str, Sequence[tuple[float, str]], str]],
    *,
    full: float | None = None,
    key: Sequence[tuple[str, str]] = (),
) -> str:
    """Horizontal bars, one per row: (name, [(value, colour), ...] stacked, value as shown).

    ``full`` (default: the longest bar) spans the whole width; ``key`` is a legend above. The
    names are left of the bars when there is room, else above them.
    """
    if not rows:
        return svg(width, 28, label, [_text(0, 18, "nothing yet", cls="muted")])
    beside = width >= WIDE
    row, left, right = (28, 200, 110) if beside else (44, 0, 90)
    span = width - left - right
    longest = full or max(sum(v for v, _ in segments) for _, segments, _ in rows) or 1.0
    body, top = legend(left, 14, width, key) if key else ([], -10.0)
    top += 10
    for i, (name, segments, shown) in enumerate(rows):
        y, x = top + i * row, float(left)
        if beside:
            body.append(_text(left - 8, y + 18, _short(name), "end"))
        else:
            body.append(_text(0, y + 15, _short(name)))
            y += 16
        for value, colour in segments:
            length = span * value / longest
            body.append(
                f'<rect x="{x:.1f}" y="{y + 5}" width="{length:.1f}" height="18" '
                f'fill="{colour}"><title>{escape(f"{name}: {shown}")}</title></rect>'
            )
            x += length
        body.append(_text(x + 6, y + 18, shown))
    return svg(width, top + row * len(rows), label, body)


def _y_axis(width: int, top: float, base: float, ticks: Sequence[float], title: str) -> list[str]:
    """Grid lines at round counts, labelled on the left, the axis named above them."""
    y_of, left = scale(ticks[-1], base, top), _LEFT
    body = [_text(0, top - 22, title, cls="axis-title")]
    for n in ticks:
        body.append(_line(left, y_of(n), width - _RIGHT, y_of(n), COLOURS["grid"]))
        body.append(_text(left - 6, y_of(n) + 4, f"{n:g}", "end"))
    return body


def arrival_chart(
    width: int, bins: Sequence[tuple[float, float, int]], p50: float | None, p95: float | None
) -> str:
    """Codes per span of seconds after the order: each bin's edges labelled, a y axis of round
    counts with grid lines, and where half and 95% of the codes had come."""
    label = "code arrival times"
    if not bins:
        return svg(width, 28, label, [_text(0, 18, "no codes received", cls="muted")])
    top, base, height = 46, 226, 266
    plot = width - _LEFT - _RIGHT
    ys = count_ticks(max(n for _, _, n in bins))
    y_of, x_of = scale(ys[-1], base, top), scale(bins[-1][1], _LEFT, _LEFT + plot)
    body = _y_axis(width, top, base, ys, "codes")
    step = plot / len(bins)
    for i, (start, stop, n) in enumerate(bins):
        x = _LEFT + i * step
        body.append(
            f'<rect x="{x + 1.5:.1f}" y="{y_of(n):.1f}" width="{step - 3:.1f}" '
            f'height="{base - y_of(n):.1f}" fill="{COLOURS["codes"]}">'
            f"<title>{start:g}-{stop:g} s: {n} codes</title></rect>"
        )
    edges = [bins[0][0], *(b for _, b, _ in bins)]
    every = math.ceil(len(edges) * 40 / plot)  # labels 40 units apart at the least
    for i, edge in enumerate(edges):
        if i % every == 0:
            body.append(_line(x_of(edge), base, x_of(edge), base + 4, COLOURS["axis"]))
            body.append(_text(x_of(edge), base + 17, f"{edge:g}", "middle"))
    body.append(_line(_LEFT, base, width - _RIGHT, base, COLOURS["axis"]))
    body.append(_text(_LEFT + plot / 2, height - 4, "seconds from order to code", "middle"))
    # Two rows of marks, so p50 and p95 never print over each other however close they are.
    for name, value, y in (("p50", p50, top - 20), ("p95", p95, top - 6)):
        if value is not None:
            x = x_of(value)
            body.append(_line(x, y + 2, x, base, "#333", "4 3"))
            at = min(max(x, _LEFT + 40), width - 40)
            body.append(_text(at, y - 2, f"{name} {value:g} s", "middle", "mark"))
    return svg(width, height, label, body)


def timeline_chart(
    width: int, series: Sequence[tuple[str, str, Sequence[float]]], span: float
) -> str:
    """Cumulative counts over the job's time: (name, colour, sorted seconds from the start)
    per line, each drawn as steps from 0 at the submission to its total."""
    label = "timeline"
    if not any(times for _, _, times in series):
        return svg(width, 28, label, [_text(0, 18, "nothing was bought", cls="muted")])
    body, top = legend(0, 12, width, [(c, f"{name} ({len(t)})") for name, c, t in series])
    top += 38
    base, height = top + 176, top + 216
    plot, span = width - _LEFT - _RIGHT, max(span, 1.0)
    ys = count_ticks(max(len(times) for _, _, times in series))
    y_of, x_of = scale(ys[-1], base, top), scale(span, _LEFT, _LEFT + plot)
    body += _y_axis(width, top, base, ys, "numbers")
    for moment in time_ticks(span, most=max(2, int(plot // 80))):
        body.append(_line(x_of(moment), base, x_of(moment), base + 4, COLOURS["axis"]))
        body.append(_text(x_of(moment), base + 17, format_duration(moment), "middle"))
    body.append(_line(_LEFT, base, width - _RIGHT, base, COLOURS["axis"]))
    body.append(_text(_LEFT + plot / 2, height - 4, "time since submission", "middle"))
    for name, colour, times in series:
        # One step per unit (about a pixel), however many events share it: a big job's line
        # stays a few hundred points.
        steps: dict[str, int] = {}
        for count, moment in enumerate(times, start=1):
            steps[f"{x_of(moment):.0f}"] = count
        points, count = [f"{_LEFT},{base}"], 0
        for x, total in steps.items():
            points.append(f"{x},{y_of(count):.1f} {x},{y_of(total):.1f}")
            count = total
        points.append(f"{width - _RIGHT},{y_of(count):.1f}")
        body.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="{colour}" '
            f'stroke-width="2"><title>{escape(name)}: {count}</title></polyline>'
        )
    return svg(width, height, label, body)
