"""Which jobs ``orchestrator export`` writes: ids or names given, and a query by name and day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from orchestrator.db import queries
from orchestrator.db.models import Job
from orchestrator.errors import JobNotFound

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlmodel import Session


class SelectionError(ValueError):
    """Raised when export selectors are missing or a day does not parse."""


def parse_day(text: str, option: str) -> date:
    """A ``YYYY-MM-DD`` day for ``option``."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SelectionError(f"{option}: expected a day like 2026-11-24, got {text!r}") from None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


@dataclass(frozen=True)
class Selection:
    """Jobs by id or name (``refs``: the newest of a name), plus every job of ``names`` submitted
    between ``since`` and ``until`` (whole UTC days, both included)."""

    refs: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None

    def __post_init__(self) -> None:
        if not (self.refs or self.is_query):
            raise SelectionError("name the jobs to export: JOB ..., --name, --since or --until")
        if self.since and self.until and self.since > self.until:
            raise SelectionError(f"--since {self.since} is after --until {self.until}")

    @property
    def is_query(self) -> bool:
        return bool(self.names) or self.since is not None or self.until is not None

    def describe(self) -> str:
        parts = [f"name {n!r}" for n in self.names]
        if self.since:
            parts.append(f"since {self.since}")
        if self.until:
            parts.append(f"until {self.until}")
        return ", ".join(parts)


def select_jobs(session: Session, selection: Selection) -> list[Job]:
    """The selected jobs, each once, by id; JobNotFound if a ref or the query finds none."""
    found = {job.id: job for job in (queries.get_job(session, ref) for ref in selection.refs)}
    if selection.is_query:
        matched = queries.jobs_matching(
            session,
            names=selection.names,
            since=_midnight(selection.since) if selection.since else None,
            before=_midnight(selection.until + timedelta(days=1)) if selection.until else None,
        )
        if not matched:
            raise JobNotFound(f"no job matches {selection.describe()}")
        found.update((job.id, job) for job in matched)
    return [found[i] for i in sorted(i for i in found if i is not None)]
