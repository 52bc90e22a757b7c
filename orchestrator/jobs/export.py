"""Slots to CSV or JSON lines: one record per number, timestamps ISO 8601 UTC.

Provider text is untrusted (rule 8). In both formats secrets are masked (``redact.mask``). CSV
cells of the text columns go through ``redact.for_csv``: a value a spreadsheet would run as a
formula gets a leading ``'``. Only those columns: the others (ids, money, timestamps, status)
are written by us from numbers, dates and our own names, never from provider text, and must
stay the values they are. Rows are RFC 4180 (CRLF-terminated): Python's writer quotes a field
holding the delimiter, the quote or a character of its line terminator, so with CRLF a CR or
LF inside a value is quoted and never splits a row (with a bare LF, a lone CR went out as is).
JSON lines keep the raw values, secrets aside: JSON escapes what needs escaping.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from orchestrator.db import queries
from orchestrator.db.engine import transaction
from orchestrator.db.models import Activation, Job, State, Target
from orchestrator.jobs.export_path import PathTemplate
from orchestrator.jobs.output_file import write_atomically
from orchestrator.money import from_micros
from orchestrator.redact import for_csv, mask

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlalchemy import Engine

COLUMNS = (
    "job_id",
    "job_name",
    "slot",
    "attempt",
    "service_id",
    "service_name",
    "country_id",
    "country_name",
    "order_id",
    "phone",
    "cost",
    "spent",
    "max_price",
    "status",
    "code",
    "ordered_at",
    "code_at",
    "finished_at",
    "error",
)

# Columns that carry text from the provider (names, order ids, phones, codes, its messages)
# or the user (the job's name): neutralised in CSV cells.
TEXT_COLUMNS = frozenset(
    {"job_name", "service_name", "country_name", "order_id", "phone", "code", "error"}
)

Row = tuple[Job, Target, Activation]
# What each slot was charged and not refunded, by slot id (``queries.charged_micros_by_slot``).
Charged = Mapping[int, int]
# A slot not charged spent nothing, unless its purchase's outcome is unknown: the ``spent``
# cell is then empty (the budget holds the cap for it meanwhile).
_UNKNOWN_COST = frozenset({State.ORDERING, State.IN_DOUBT})


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


def _spent(act: Activation, charged: Charged) -> int | None:
    """What the slot cost after refunds: its cost, 0 once refunded or never bought, None
    when unknown. Summed, the column is the job's spend."""
    if act.id is not None and act.id in charged:
        return charged[act.id]
    return None if act.state in _UNKNOWN_COST and act.cost_micros is None else 0


def to_json_record(
    job: Job, target: Target, act: Activation, charged: Charged
) -> dict[str, object]:
    """One slot as a JSON object: ids as numbers, money as strings, absent values as None;
    secrets masked in the text."""
    spent = _spent(act, charged)
    record: dict[str, object] = {
        "job_id": job.id,
        "job_name": job.name,
        "slot": act.slot,
        "attempt": act.attempt,
        "service_id": target.service_id,
        "service_name": target.service_name,
        "country_id": act.country_id,
        "country_name": act.country_name,
        "order_id": act.order_id,
        "phone": act.phone,
        "cost": str(from_micros(act.cost_micros)) if act.cost_micros is not None else None,
        "spent": str(from_micros(spent)) if spent is not None else None,
        "max_price": str(from_micros(act.cap_micros)),
        "status": act.state.value,
        "code": act.code,
        "ordered_at": _iso(act.ordered_at),
        "code_at": _iso(act.code_at),
        "finished_at": _iso(act.finished_at),
        "error": act.error,
    }
    return {
        k: mask(v) if k in TEXT_COLUMNS and isinstance(v, str) else v for k, v in record.items()
    }


def to_record(job: Job, target: Target, act: Activation, charged: Charged) -> dict[str, object]:
    """One slot as a flat record with the CSV's columns: absent values empty, text columns
    neutralised (``redact.for_csv``)."""
    return {
        k: "" if v is None else for_csv(v) if k in TEXT_COLUMNS and isinstance(v, str) else v
        for k, v in to_json_record(job, target, act, charged).items()
    }


def write_csv(rows: Iterable[Row], out: TextIO, charged: Charged) -> int:
    """Write the header and one line per slot; returns the number of slots written."""
    # CRLF (RFC 4180, the writer's default): see the module's docstring.
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    count = 0
    for job, target, act in rows:
        writer.writerow(to_record(job, target, act, charged))
        count += 1
    return count


def write_jsonl(rows: Iterable[Row], out: TextIO, charged: Charged) -> int:
    """Write one JSON object per line and slot; returns the number of slots written."""
    count = 0
    for job, target, act in rows:
        out.write(json.dumps(to_json_record(job, target, act, charged), ensure_ascii=False) + "\n")
        count += 1
    return count


def write_rows(rows: Iterable[Row], out: TextIO, fmt: ExportFormat, charged: Charged) -> int:
    """Write the slots in ``fmt``; returns how many were written."""
    write = write_jsonl if fmt is ExportFormat.JSONL else write_csv
    return write(rows, out, charged)


def export_jobs(
    engine: Engine, job_ids: list[int], path: Path, fmt: ExportFormat | None = None
) -> int:
    """Write the jobs' slots to ``path`` (format from its suffix unless given), atomically;
    returns how many were written."""
    rows, charged = _read(engine, job_ids)
    chosen = fmt or ExportFormat.for_path(path)
    return write_atomically(path, lambda handle: write_rows(rows, handle, chosen, charged))


def export_jobs_to(engine: Engine, job_ids: list[int], out: TextIO, fmt: ExportFormat) -> int:
    """Write the jobs' slots to an open stream (``export --output -``: stdout); returns how
    many were written."""
    rows, charged = _read(engine, job_ids)
    return write_rows(rows, out, fmt, charged)


def _read(engine: Engine, job_ids: list[int]) -> tuple[list[Row], Charged]:
    """The jobs' rows and what each slot was charged, read in one transaction."""
    with transaction(engine) as session:
        rows = list(queries.export_rows(session, job_ids))
        return rows, queries.charged_micros_by_slot(session, job_ids)


def export_job(engine: Engine, job_id: int, template: PathTemplate) -> tuple[Path, int]:
    """Export one job to its expanded path template; the path and the rows written."""
    with transaction(engine) as session:
        job = queries.get_job(session, job_id)
    path = template.expand(name=job.name, job_id=job_id, submitted=job.created_at)
    return path, export_jobs(engine, [job_id], path)
