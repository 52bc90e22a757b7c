"""The ``run --export`` path template: ``out/{name}-{date}-{job_id}.csv`` filled in per job."""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PLACEHOLDERS = {
    "name": "the job's name",
    "job_id": "the job's id",
    "date": "the day the job was submitted, YYYY-MM-DD (UTC)",
    "time": "the time the job was submitted, HHMMSS (UTC)",
}
_KNOWN = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
_SAMPLE = {"name": "job", "job_id": 1, "date": "2026-01-01", "time": "000000"}


class TemplateError(ValueError):
    """Raised when an export path template names an unknown placeholder or does not parse."""


@dataclass(frozen=True)
class PathTemplate:
    """A path with ``{name}``, ``{job_id}``, ``{date}`` and ``{time}`` in it (or none)."""

    text: str

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        """Check every placeholder now, so a typo is refused before anything is bought."""
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        except ValueError as exc:
            raise TemplateError(
                f"export path {text!r} does not parse ({exc}); write {{{{ and }}}} for braces"
            ) from None
        for field in fields:
            if field not in PLACEHOLDERS:
                shown = "{" + field + "}" if field else "{}"
                raise TemplateError(
                    f"export path {text!r}: unknown placeholder {shown}; use {_KNOWN}"
                )
        try:
            text.format(**_SAMPLE)
        except (ValueError, TypeError) as exc:  # a format spec that does not fit, like {date:d}
            raise TemplateError(f"export path {text!r}: {exc}") from None
        return cls(text)

    @property
    def fixed_path(self) -> Path | None:
        """The path, when it has no placeholder (the same for every job); else None."""
        if any(field is not None for _, field, _, _ in string.Formatter().parse(self.text)):
            return None
        return Path(self.text.format())

    def expand(self, *, name: str, job_id: int, submitted: datetime) -> Path:
        """The path for one job; ``submitted`` is read in UTC."""
        when = submitted.astimezone(UTC)
        return Path(
            self.text.format(
                name=name,
                job_id=job_id,
                date=when.strftime("%Y-%m-%d"),
                time=when.strftime("%H%M%S"),
            )
        )
