"""Slots to CSV: one row per number, header first, timestamps in ISO 8601 UTC (no queries here)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import datetime
from typing import TextIO

from orchestrator.models import Activation, Job, Target
from orchestrator.money import from_micros

COLUMNS = (
    "job_id",
    "job_name",
    "slot",
    "service_id",
    "service_name",
    "country_id",
    "country_name",
    "order_id",
    "phone",
    "cost",
    "max_price",
    "status",
    "code",
    "ordered_at",
    "code_at",
    "finished_at",
    "error",
)


def _iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


def to_record(job: Job, target: Target, act: Activation) -> dict[str, object]:
    """One slot as a flat record with the CSV's columns."""
    return {
        "job_id": job.id,
        "job_name": job.name,
        "slot": act.slot,
        "service_id": target.service_id,
        "service_name": target.service_name,
        "country_id": act.country_id if act.country_id is not None else "",
        "country_name": act.country_name or "",
        "order_id": act.order_id or "",
        "phone": act.phone or "",
        "cost": from_micros(act.cost_micros) if act.cost_micros is not None else "",
        "max_price": from_micros(act.cap_micros),
        "status": act.state.value,
        "code": act.code or "",
        "ordered_at": _iso(act.ordered_at),
        "code_at": _iso(act.code_at),
        "finished_at": _iso(act.finished_at),
        "error": act.error or "",
    }


def write_csv(rows: Iterable[tuple[Job, Target, Activation]], out: TextIO) -> int:
    """Write the header and one line per slot; returns the number of slots written."""
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for job, target, act in rows:
        writer.writerow(to_record(job, target, act))
        count += 1
    return count
