"""Submit job files on their ``schedule:`` without a crontab: one active scheduler, each fire once.

Three parts, each doing one thing:

- :func:`due_fire` is the clock arithmetic, pure: which fire, if any, is due now.
- a ``RedisLock`` elects one active scheduler per Redis; any other waits on standby and
  takes over when the holder stops refreshing the lock (it died, hung or lost Redis).
- :class:`Scheduler` claims a due fire by inserting its ``ScheduleFire`` row. The row's
  UNIQUE(job_name, fire_at) is what makes a fire run at most once, across restarts and
  between two schedulers that both believe they are active; the lock only keeps a second
  one idle. The claim is committed *before* the job is submitted, so a scheduler that dies
  in between loses that fire rather than running it twice: a fire buys numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

import redis
import structlog
from croniter import croniter

from orchestrator.db import queries, store
from orchestrator.db.engine import transaction
from orchestrator.db.errors import IntegrityError, SQLAlchemyError
from orchestrator.db.models import ScheduleFire, utcnow
from orchestrator.errors import ConfigError, JobOverlap, SpecError
from orchestrator.jobs.spec import JobLimits, JobSpec, load_job_spec
from orchestrator.redact import mask
from orchestrator.redis_lock import RedisLock

if TYPE_CHECKING:  # types only: SQL runs in db/
    from sqlalchemy import Engine

__all__ = [
    "DEFAULT_CATCH_UP",
    "DEFAULT_TICK",
    "LOCK_KEY",
    "WORKERS_NOTE",
    "Outcome",
    "Scheduler",
    "Submit",
    "due_fire",
    "latest_fire",
    "run_scheduler",
]

log = structlog.get_logger(__name__)

LOCK_KEY: Final = "legitsms-orchestrator:scheduler-lock"
DEFAULT_TICK: Final = 20.0
DEFAULT_CATCH_UP: Final = timedelta(hours=1)
LOCK_TTL_TICKS: Final = 3  # a holder may miss two refreshes before a standby takes over
JOB_SUFFIXES: Final = frozenset({".yaml", ".yml"})

# The scheduler submits and nothing more: a job it submits waits on the queue until workers
# take it. Said at start-up and in --help, since nothing else would tell.
WORKERS_NOTE: Final = (
    "this only submits jobs: run `orchestrator worker` (or docker compose) elsewhere to work them"
)

Submit = Callable[[Path], int]
"""Submits a job file and returns the job's id; raises ``JobOverlap`` if its namesake is active."""


class Outcome(StrEnum):
    """What became of a claimed fire (``ScheduleFire.outcome``)."""

    CLAIMED = "claimed"  # claimed; the submission is under way, or its scheduler died during it
    SUBMITTED = "submitted"  # the job was submitted; job_id says which
    SKIPPED_OVERLAP = "skipped_overlap"  # the previous run of the job was still active
    FAILED = "failed"  # the submission raised; error says why


def latest_fire(schedule: str, now: datetime) -> datetime:
    """The most recent time at or before ``now`` that ``schedule`` names, read in UTC."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    # croniter reads the expression in the start time's zone: UTC, whatever zone ``now`` is in.
    # Its get_prev is strictly before the start, so start a microsecond later to count ``now``.
    start = now.astimezone(UTC) + timedelta(microseconds=1)
    fire = croniter(schedule, start).get_prev(datetime)
    assert isinstance(fire, datetime)
    return fire.astimezone(UTC)


def due_fire(
    schedule: str,
    last_fire: datetime | None,
    now: datetime,
    *,
    catch_up: timedelta = DEFAULT_CATCH_UP,
    seen: datetime | None = None,
) -> datetime | None:
    """The fire of ``schedule`` to run at ``now``, or None when none is due.

    That is the latest fire at or before ``now``, if it is later than ``last_fire`` and at
    most ``catch_up`` late. Fires missed while no scheduler ran collapse into that one: an
    hourly job whose scheduler was down for five hours runs once on its return, not five
    times. Past the window even that one is skipped and the next fire runs as usual: a
    nightly batch is still worth buying at 03:40 after a short outage, but not at noon, when
    whatever was waiting for its codes has moved on and the money may be wanted elsewhere.

    A job that never fired has nothing to catch up on: its first fire is the first to come
    at or after ``seen``, when the scheduler first read its file. A job file added at 03:10
    with ``0 3 * * *`` waits for the next night, rather than buying at once because of a
    time that had passed before anyone asked for it.
    """
    fire = latest_fire(schedule, now)
    if last_fire is not None and fire <= last_fire:
        return None
    if last_fire is None and seen is not None and fire < seen:
        return None
    if now - fire > catch_up:
        return None
    return fire


class Scheduler:
    """Looks at a folder of job files every tick and submits each scheduled one when due."""

    def __init__(
        self,
        jobs_dir: Path,
        *,
        engine: Engine,
        lock: RedisLock,
        submit: Submit,
        catch_up: timedelta,
        now: Callable[[], datetime],
        stop: threading.Event,
        limits: JobLimits = JobLimits(),  # noqa: B008
    ) -> None:
        self.jobs_dir = jobs_dir
        self.limits = limits
        self.engine = engine
        self.lock = lock
        self.submit = submit
        self.catch_up = catch_up
        self.now = now
        self.stop = stop
        self.active: bool | None = None  # None until the first look at the lock
        self._problems: dict[Path, str] = {}  # reported once each, not every tick
        # Each file's job name and schedule, and when this scheduler first read them so.
        self._loaded: dict[Path, tuple[str, str, datetime]] = {}
        self._missed: set[tuple[str, datetime]] = set()

    def hold(self) -> bool:
        """Keep the lock if ours, take it if free; log each change of role."""
        try:
            held = (bool(self.active) and self.lock.refresh()) or self.lock.acquire()
            holder = None if held else self.lock.holder()
        except redis.RedisError as exc:
            log.error("scheduler_redis_error", error=str(exc))
            held, holder = False, None
        if held and self.active is not True:
            log.info("scheduler_active", instance=self.lock.token)
        elif not held and self.active is True:
            log.warning("scheduler_lost_lock", instance=self.lock.token, holder=holder)
        if not held and self.active is not False:
            log.info("scheduler_standby", instance=self.lock.token, holder=holder)
        self.active = held
        return held

    def tick(self) -> None:
        """Submit every scheduled job that is due; stop early if the lock is lost."""
        now = self.now()
        specs = self._scheduled_specs(now)
        last_fires = self._last_fires()
        for path, spec in specs:
            assert spec.schedule is not None
            if self.stop.is_set():
                return
            last = last_fires.get(spec.name)
            seen = self._loaded[path][2]
            fire = due_fire(spec.schedule, last, now, catch_up=self.catch_up, seen=seen)
            if fire is None:
                self._note_missed(spec.name, spec.schedule, last, now)
                continue
            if not self.hold():  # still ours? a standby may have taken over while we worked
                return
            self._fire(path, spec.name, fire)

    def _fire(self, path: Path, name: str, fire: datetime) -> None:
        fire_id = self._claim(name, fire)
        if fire_id is None:
            log.info("schedule_fire_taken", job_name=name, fire_at=fire.isoformat())
            return
        try:
            job_id = self.submit(path)
        except JobOverlap as exc:
            self._settle(fire_id, Outcome.SKIPPED_OVERLAP, error=str(exc))
            log.warning(
                "schedule_skipped_overlap",
                job_name=name,
                fire_at=fire.isoformat(),
                error=str(exc),
                message="this fire is skipped; the next one runs once the job has ended",
            )
        except Exception as exc:
            # Not retried: the submission may have got far enough to plan the job.
            self._settle(fire_id, Outcome.FAILED, error=str(exc))
            log.error(
                "schedule_submit_failed", job_name=name, fire_at=fire.isoformat(), error=str(exc)
            )
        else:
            self._settle(fire_id, Outcome.SUBMITTED, job_id=job_id)
            log.info("schedule_fired", job_name=name, fire_at=fire.isoformat(), job_id=job_id)

    def _claim(self, name: str, fire: datetime) -> int | None:
        """Insert the fire's row, committed on its own; None if it exists (already done)."""
        try:
            with transaction(self.engine) as session:
                row = ScheduleFire(job_name=name, fire_at=fire)
                session.add(row)
                session.flush()
                assert row.id is not None
                return row.id
        except IntegrityError:
            return None

    def _settle(
        self, fire_id: int, outcome: Outcome, *, job_id: int | None = None, error: str | None = None
    ) -> None:
        with transaction(self.engine) as session:
            # A submit's error may quote the provider (which may repeat the key).
            store.settle_fire(
                session, fire_id, outcome=outcome.value, job_id=job_id, error=error and mask(error)
            )

    def _last_fires(self) -> dict[str, datetime]:
        with transaction(self.engine) as session:
            return queries.last_fires(session)

    def _scheduled_specs(self, now: datetime) -> list[tuple[Path, JobSpec]]:
        """The folder's valid job files that carry a schedule, one per job name; ``now`` is
        noted as when a file (or its changed name or schedule) was first seen."""
        specs: list[tuple[Path, JobSpec]] = []
        names: dict[str, Path] = {}
        for path in self._job_files():
            try:
                spec = load_job_spec(path, self.limits)
            except SpecError as exc:
                self._problem(path, str(exc))
                continue
            if spec.schedule is None:
                self._problems.pop(path, None)
                continue
            first = names.setdefault(spec.name, path)
            if first != path:
                self._problem(
                    path, f"{path}: name: {spec.name!r} is also the name of {first}; not scheduled"
                )
                continue
            self._problems.pop(path, None)
            if self._loaded.get(path, ())[:2] != (spec.name, spec.schedule):
                self._loaded[path] = (spec.name, spec.schedule, now)
                log.info("schedule_loaded", file=str(path), job_name=spec.name, cron=spec.schedule)
            specs.append((path, spec))
        return specs

    def _job_files(self) -> list[Path]:
        try:
            entries = sorted(self.jobs_dir.iterdir())
        except OSError as exc:
            self._problem(self.jobs_dir, f"{self.jobs_dir}: cannot be read: {exc.strerror}")
            return []
        self._problems.pop(self.jobs_dir, None)
        # Dot files are editors' swap files and half-written copies, not jobs.
        return [
            path
            for path in entries
            if path.suffix.lower() in JOB_SUFFIXES and not path.name.startswith(".")
        ]

    def _problem(self, path: Path, message: str) -> None:
        if self._problems.get(path) != message:
            self._problems[path] = message
            log.error("schedule_file_invalid", file=str(path), error=message)

    def _note_missed(self, name: str, schedule: str, last: datetime | None, now: datetime) -> None:
        """Say once that a fire came and went while no scheduler ran (see ``due_fire``)."""
        fire = latest_fire(schedule, now)
        if last is None or fire <= last or (name, fire) in self._missed:
            return
        self._missed.add((name, fire))
        log.warning(
            "schedule_missed",
            job_name=name,
            fire_at=fire.isoformat(),
            late_by=str(now - fire),
            catch_up=str(self.catch_up),
        )

    def run(self, tick: float) -> None:
        """Tick until ``stop`` is set; give the lock up on the way out."""
        log.info("scheduler_started", jobs_dir=str(self.jobs_dir), tick=tick, note=WORKERS_NOTE)
        try:
            while not self.stop.is_set():
                if self.hold():
                    try:
                        self.tick()
                    except (redis.RedisError, SQLAlchemyError) as exc:
                        log.error("scheduler_tick_failed", error=str(exc))
                self.stop.wait(tick)
        finally:
            if self.active:
                try:
                    self.lock.release()
                except redis.RedisError as exc:  # it expires on its own
                    log.warning("scheduler_release_failed", error=str(exc))
            log.info("scheduler_stopped", instance=self.lock.token)


def run_scheduler(
    jobs_dir: Path,
    *,
    engine: Engine,
    redis_client: redis.Redis,
    submit: Submit,
    tick: float = DEFAULT_TICK,
    stop: threading.Event | None = None,
    now: Callable[[], datetime] = utcnow,
    catch_up: timedelta = DEFAULT_CATCH_UP,
    lock_ttl: float | None = None,
    limits: JobLimits = JobLimits(),  # noqa: B008
) -> None:
    """Submit each job file in ``jobs_dir`` that has a ``schedule:`` when due, until ``stop``.

    Only the scheduler holding the lock in ``redis_client`` acts; others wait on standby and
    take over within ``lock_ttl`` (default three ticks) of the holder dying. ``now`` is the
    clock (for tests); the tables must exist (``create_tables``).
    """
    if not jobs_dir.is_dir():
        raise SpecError(str(jobs_dir), "", "is not a folder of job files")
    if not tick > 0:
        raise ConfigError(f"tick must be more than 0 seconds, got {tick:g}")
    ttl = LOCK_TTL_TICKS * tick if lock_ttl is None else lock_ttl
    if not ttl > tick:
        raise ConfigError(f"the lock's TTL ({ttl:g}s) must be longer than a tick ({tick:g}s)")
    if catch_up.total_seconds() <= tick:
        raise ConfigError(f"catch_up ({catch_up}) must be longer than a tick ({tick:g}s)")
    scheduler = Scheduler(
        jobs_dir,
        engine=engine,
        lock=RedisLock(redis_client, LOCK_KEY, ttl=ttl),
        submit=submit,
        catch_up=catch_up,
        now=now,
        stop=stop if stop is not None else threading.Event(),
        limits=limits,
    )
    scheduler.run(tick)
