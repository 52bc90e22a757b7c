"""The live bar ``run`` shows on a terminal: numbers ended of total, their fates, spend/budget."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from orchestrator.jobrun import Progress
from orchestrator.models import State


class ProgressBar:
    """One bar for one job; ``update`` it with each ``Progress`` read from the database."""

    def __init__(self, console: Console, job_id: int) -> None:
        self._bar = RichProgress(
            TextColumn(f"job {job_id}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ended"),
            TextColumn("[green]{task.fields[received]} received"),
            TextColumn("[yellow]{task.fields[waiting]} waiting"),
            TextColumn("{task.fields[cancelled]} cancelled"),
            TextColumn("{task.fields[expired]} expired"),
            TextColumn("{task.fields[trouble]}"),
            TextColumn("{task.fields[spend]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._bar.add_task(
            "job",
            total=None,
            received=0,
            waiting=0,
            cancelled=0,
            expired=0,
            trouble="0 failed, 0 in doubt",
            spend="spent 0.00",
        )

    def update(self, progress: Progress) -> None:
        """Show these counts and this spend."""
        c = progress.counts
        trouble = f"{c[State.FAILED]} failed, {c[State.IN_DOUBT]} in doubt"
        if c[State.FAILED] or c[State.IN_DOUBT]:
            trouble = f"[red]{trouble}[/]"
        spend = f"spent {progress.spend}"
        if progress.budget is not None:
            spend += f" of {progress.budget}"
            if progress.budget:
                spend += f" ({progress.spend / progress.budget:.0%})"
        self._bar.update(
            self._task,
            total=progress.total,
            completed=progress.ended,
            received=c[State.RECEIVED],
            waiting=c[State.WAITING],
            cancelled=c[State.CANCELLED],
            expired=c[State.EXPIRED],
            trouble=trouble,
            spend=spend,
        )

    def __enter__(self) -> ProgressBar:
        self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._bar.stop()


def echo_to(console: Console) -> Callable[[str], None]:
    """A sink for worker log lines: printed on ``console``, above the bar while one is live."""

    def echo(line: str) -> None:
        console.print(Text.from_ansi(line), soft_wrap=True, highlight=False)

    return echo
