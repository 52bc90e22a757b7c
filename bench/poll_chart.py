"""A plain-text picture of the polling policy: poll times against the arrival distribution.

    python -m bench.poll_chart

For two arrival distributions (the benchmark's uniform 5-60 s, and a skewed one with most
codes early and a long tail), it draws the share of codes arriving at each age, the hazard
(the chance a code still to come arrives in that second, with the orders that never get one
counted as still to come), and the ages at which ``orchestrator.lifecycle.polling`` polls an
order that has not got its code, for 1 to 4 polls across the window (what the rate budget
affords: one under a tight limit, up to four with room to spare).
"""

from __future__ import annotations

import math
import random

from orchestrator.lifecycle.polling import MAX_POLLS, ArrivalModel, next_poll

BARS = " ▁▂▃▄▅▆▇█"
STEP = 2.0  # seconds per column
NEVER = 0.2  # share of orders that never get a code (the benchmark's)


def _bars(values: list[float]) -> str:
    top = max(values) or 1.0
    return "".join(BARS[round(v / top * (len(BARS) - 1))] for v in values)


def poll_ages(model: ArrivalModel, polls: int) -> list[float]:
    """Where an order without its code is polled, from its purchase to the slowest code."""
    ages, age = [], 0.0
    while age < model.delays[-1]:
        age += next_poll(model, age, interval=5.0, polls=polls)
        ages.append(age)
    return ages


def chart(title: str, delays: list[float], columns: int) -> list[str]:
    model = ArrivalModel(tuple(sorted(delays)))
    counts = [0.0] * columns
    for delay in delays:
        counts[min(columns - 1, int(delay / STEP))] += 1
    density = [c / len(delays) for c in counts]
    hazard = []
    for i in range(columns):
        still = NEVER + (1 - NEVER) * (1 - model.share_by(i * STEP))
        hazard.append((1 - NEVER) * density[i] / still if still > 0 else 0.0)
    axis = "".join("|" if (i * STEP) % 10 == 0 else "-" for i in range(columns))
    labels = "".join(f"{int(i * STEP):<5d}" for i in range(0, columns, 5))
    lines = [
        title,
        f"  {'codes arriving':<15} {_bars(density)}",
        f"  {'hazard':<15} {_bars(hazard)}",
    ]
    for polls in range(1, MAX_POLLS + 1):
        marks = [" "] * columns
        for age in poll_ages(model, polls):
            marks[min(columns - 1, int(age / STEP))] = "P"
        lines.append(f"  {f'{polls} poll(s)':<15} {''.join(marks)}")
    lines += [f"  {'age (s)':<15} {axis}", f"  {'':<15} {labels}"]
    return lines


def main() -> None:
    rng = random.Random(16)
    uniform = [rng.uniform(5.0, 60.0) for _ in range(500)]
    skewed = [min(90.0, 4.0 + rng.lognormvariate(math.log(8.0), 0.7)) for _ in range(500)]
    for line in chart("uniform 5-60 s (the benchmark's simulator)", uniform, 36):
        print(line)
    print()
    for line in chart("skewed: most codes within 15 s, a tail to 90 s", skewed, 46):
        print(line)


if __name__ == "__main__":
    main()
