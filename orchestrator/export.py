"""Slots to CSV or JSON lines: one record per number, timestamps ISO 8601 UTC (no queries here)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
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

Row = tuple[Job, Target, Activation]


class ExportFormat(StrEnum):
    """How an export is written."""

    CSV = "csv"  # a header, then one line per number; absent values are empty
    JSONL = "jsonl"  # one JSON object per number with the CSV's keys; absent values are null

    @classmethod
    def for_path(cls, path: Path) -> ExportFormat:
        """JSON lines for ``*.jsonl`` / ``*.ndjson``, CSV otherwise."""
        return cls.JSONL if path.suffix.lower() in {".jsonl", ".ndjson"} else cls.CSV


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def to_json_record(job: Job, target: Target, act: Activation) -> dict[str, object]:
    """One slot as a JSON object: ids as numbers, money as strings, absent values as None."""
    return {
        "job_id": job.id,
        "job_name": job.name,
        "slot": act.slot,
        "service_id": target.service_id,
        "service_name": target.service_name,
        "country_id": act.country_id,
        "country_name": act.country_name,
        "order_id": act.order_id,
        "phone": act.phone,
        "cost": str(from_micros(act.cost_micros)) if act.cost_micros is not None else None,
        "max_price": str(from_micros(act.cap_micros)),
        "status": act.state.value,
        "code": act.code,
        "ordered_at": _iso(act.ordered_at),
        "code_at": _iso(act.code_at),
        "finished_at": _iso(act.finished_at),
        "error": act.error,
    }


def to_record(job: Job, target: Target, act: Activation) -> dict[str, object]:
    """One slot as a flat record with the CSV's columns (absent values empty)."""
    return {k: "" if v is None else v for k, v in to_json_record(job, target, act).items()}


def write_csv(rows: Iterable[Row], out: TextIO) -> int:
    """Write the header and one line per slot; returns the number of slots written."""
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for job, target, act in rows:
        writer.writerow(to_record(job, target, act))
        count += 1
    return count


def write_jsonl(rows: Iterable[Row], out: TextIO) -> int:
    """Write one JSON object per line and slot; returns the number of slots written."""
    count = 0
    for job, target, act in rows:
        out.write(json.dumps(to_json_record(job, target, act), ensure_ascii=False) + "\n")
        count += 1
    return count


def write_rows(rows: Iterable[Row], out: TextIO, fmt: ExportFormat) -> int:
    """Write the slots in ``fmt``; returns how many were written."""
    return write_jsonl(rows, out) if fmt is ExportFormat.JSONL else write_csv(rows, out)
