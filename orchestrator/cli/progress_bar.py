"""The live bar ``run`` shows on a terminal: numbers ended of total, their fates, spend/budget."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from orchestrator.cli.watch import Progress
from orchestrator.db.models import State
from orchestrator.money import shown
from orchestrator.redact import for_terminal

log = structlog.get_logger(__name__)

# Workers' lines arrive on reader threads. One printed while the bar is being stopped lands on
# the bar's own line (no live display to print it above), and the bar is then drawn a second
# time under it: starting, stopping and printing take turns.
_TURNS = threading.RLock()


class ProgressBar:
    """One bar for one job; ``update`` it with each ``Progress`` read from the database.

    Its counts add up to the numbers of the job: ended (received, cancelled, expired, failed,
    in doubt), then waiting, cancelling and to buy; a job asking for codes shows them too.
    """

    def __init__(self, console: Console, job_id: int) -> None:
        self._job_id = job_id
        self._bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ended"),
            TextColumn("{task.fields[codes]}"),
            TextColumn("[green]{task.fields[received]} received"),
            TextColumn("{task.fields[cancelled]} cancelled"),
            TextColumn("{task.fields[expired]} expired"),
            TextColumn("{task.fields[trouble]}"),
            TextColumn("[yellow]{task.fields[waiting]} waiting"),
            TextColumn("{task.fields[cancelling]} cancelling"),
            TextColumn("{task.fields[to_buy]} to buy"),
            TextColumn("{task.fields[spend]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._task = self._bar.add_task(
            f"job {job_id}",
            total=None,
            codes="",
            received=0,
            cancelled=0,
            expired=0,
            trouble="0 failed, 0 in doubt",
            waiting=0,
            cancelling=0,
            to_buy=0,
            spend="spent 0.00",
        )

    def update(self, progress: Progress) -> None:
        """Show these counts and this spend."""
        c = progress.counts
        trouble = f"{c[State.FAILED]} failed, {c[State.IN_DOUBT]} in doubt"
        if c[State.FAILED] or c[State.IN_DOUBT]:
            trouble = f"[red]{trouble}[/]"
        spend = f"spent {shown(progress.spend)}"
        if progress.budget is not None:
            spend += f" of {shown(progress.budget)}"
            if progress.budget:
                spend += f" ({progress.spend / progress.budget:.0%})"
        codes = "codes {}/{}:".format(*progress.codes) if progress.asks_codes else ""
        self._bar.update(
            self._task,
            total=progress.total,
            completed=progress.ended,
            codes=codes,
            received=c[State.RECEIVED],
            cancelled=c[State.CANCELLED],
            expired=c[State.EXPIRED],
            trouble=trouble,
            waiting=c[State.WAITING],
            cancelling=c[State.CANCELLING],
            to_buy=progress.to_buy,
            spend=spend,
        )

    def label(self, note: str) -> None:
        """Say what the job is doing beside its id (``job 7 finishing``)."""
        self._bar.update(self._task, description=f"job {self._job_id} {note}")

    def __enter__(self) -> ProgressBar:
        with _TURNS:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with _TURNS:
            self._bar.stop()


def echo_to(console: Console) -> Callable[[str], None]:
    """A sink for worker log lines: printed on ``console``, above the bar while one is live."""

    def echo(line: str) -> None:
        with _TURNS:
            console.print(Text.from_ansi(line), soft_wrap=True, highlight=False)

    return echo


@contextmanager
def spinner(console: Console, text: str) -> Iterator[None]:
    """A spinner with ``text`` while a silent step goes on (reading the job file's names and
    prices from the provider takes seconds), on a terminal only: a log has no use for it."""
    if not console.is_terminal:
        yield
        return
    with console.status(Text(for_terminal(text))):  # Text: a file's name is no markup
        yield


def tell(console: Console, event: str, text: str, *, warn: bool = False, **fields: object) -> None:
    """One of ``run``'s own lines. On a terminal, ``text`` as text (no markup, control
    characters escaped, never wrapped), above the bar. Off one, a JSON log line like every
    other line of the stream (cron logs are read by machines): ``event``, ``fields`` and the
    same text as ``message``; ``warn``: at warning level, so ``--quiet`` keeps it (an
    interrupt, orders left: what concerns money)."""
    if not console.is_terminal:
        (log.warning if warn else log.info)(event, message=text, **fields)
        return
    with _TURNS:
        console.print(for_terminal(text), soft_wrap=True, highlight=False, markup=False)


def say_to(console: Console, event: str, *, warn: bool = False) -> Callable[[str], None]:
    """A sink for ``run``'s own lines (``tell``), each logged as ``event`` off a terminal."""

    def say(line: str) -> None:
        tell(console, event, line, warn=warn)

    return say
