"""The scheduler: when a schedule is due, one active scheduler per Redis, each fire run once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
from sqlalchemy import Engine
from sqlmodel import col, select
from structlog.testing import capture_logs
from typer.testing import CliRunner

from orchestrator.cli.app import app
from orchestrator.db.engine import make_engine, transaction
from orchestrator.db.models import Job, ScheduleFire
from orchestrator.errors import JobOverlap, ProviderUnavailable, SpecError
from orchestrator.jobs.scheduler import (
    LOCK_KEY,
    Outcome,
    Scheduler,
    due_fire,
    latest_fire,
    run_scheduler,
)
from orchestrator.redis_lock import RedisLock
from tests import support
from tests.support import write_job

TICK = 0.05
TTL = 2.0  # long enough that a busy SQLite never lets the holder's lock lapse by accident
SHORT_TTL = 0.6  # for the tests where the holder hangs and its lock must lapse
NIGHT = datetime(2026, 3, 10, 3, 0, tzinfo=UTC)  # a fire of "0 3 * * *"

JOB = """\
name: {name}
schedule: "{cron}"
targets:
  - service: Telegram
    country: 16
    quantity: 1
    max_price: 1.00
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# The pure core.


def test_a_schedule_is_due_from_its_fire_time_on_and_not_a_moment_before() -> None:
    assert due_fire("0 3 * * *", None, NIGHT - timedelta(seconds=1)) is None
    assert due_fire("0 3 * * *", None, NIGHT) == NIGHT
    assert due_fire("0 3 * * *", None, NIGHT + timedelta(minutes=5)) == NIGHT


def test_a_fire_already_done_is_not_due_again_until_the_next_one() -> None:
    assert due_fire("0 3 * * *", NIGHT, NIGHT + timedelta(minutes=30)) is None
    tomorrow = NIGHT + timedelta(days=1)
    assert due_fire("0 3 * * *", NIGHT, tomorrow - timedelta(minutes=1)) is None
    assert due_fire("0 3 * * *", NIGHT, tomorrow) == tomorrow


def test_fires_missed_while_no_scheduler_ran_collapse_into_the_latest_one() -> None:
    last = at("2026-03-10T00:00")
    now = at("2026-03-10T05:10")

    assert due_fire("0 * * * *", last, now) == at("2026-03-10T05:00")
    assert due_fire("0 * * * *", at("2026-03-10T05:00"), now) is None


def test_a_fire_later_than_the_catch_up_window_is_skipped_and_the_next_runs() -> None:
    yesterday = NIGHT - timedelta(days=1)
    hour = timedelta(hours=1)

    assert due_fire("0 3 * * *", yesterday, NIGHT + hour, catch_up=hour) == NIGHT
    assert due_fire("0 3 * * *", yesterday, NIGHT + hour + timedelta(seconds=1)) is None
    assert due_fire("0 3 * * *", yesterday, at("2026-03-10T12:00")) is None
    assert due_fire("0 3 * * *", yesterday, at("2026-03-10T12:00"), catch_up=9 * hour) == NIGHT
    tomorrow = NIGHT + timedelta(days=1)
    assert due_fire("0 3 * * *", yesterday, tomorrow + timedelta(seconds=20)) == tomorrow


def test_a_job_never_fired_fires_first_at_its_next_time_not_at_one_past_before_it_was_seen() -> (
    None
):
    seen = NIGHT + timedelta(minutes=10)
    tomorrow = NIGHT + timedelta(days=1)

    assert due_fire("0 3 * * *", None, seen, seen=seen) is None
    assert due_fire("0 3 * * *", None, NIGHT + timedelta(minutes=50), seen=seen) is None
    assert due_fire("0 3 * * *", None, tomorrow, seen=seen) == tomorrow
    assert due_fire("0 3 * * *", None, NIGHT, seen=NIGHT) == NIGHT, "seen at its very time"
    # A job that fired before is caught up as usual, whenever this scheduler first read it.
    yesterday = NIGHT - timedelta(days=1)
    assert due_fire("0 3 * * *", yesterday, seen, seen=seen) == NIGHT


def test_schedules_are_read_in_utc_whatever_zone_the_clock_is_in() -> None:
    paris_summer = timezone(timedelta(hours=2))
    now = datetime(2026, 3, 10, 5, 0, 30, tzinfo=paris_summer)  # 03:00:30 UTC

    fire = due_fire("0 3 * * *", None, now)

    assert fire == NIGHT
    assert fire is not None and fire.utcoffset() == timedelta(0)
    assert latest_fire("@daily", now) == at("2026-03-10T00:00")
    with pytest.raises(ValueError, match="timezone-aware"):
        due_fire("0 3 * * *", None, datetime(2026, 3, 10, 3, 0))  # naive


# The scheduler, on real Redis and a real database.


class Clock:
    """A clock the test moves by hand, shared by the schedulers under test."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Submissions:
    """A stand-in for the CLI's submit: makes a Job row, remembers who submitted what."""

    def __init__(self, engine: Engine, who: str = "") -> None:
        self.engine = engine
        self.who = who
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.fail: BaseException | None = None
        self.hang: threading.Event | None = None  # set it to let a hung submit return

    def __call__(self, path: Path) -> int:
        with self.lock:
            self.calls.append((self.who, path.name))
        if self.hang is not None:
            self.hang.wait(10)
        if self.fail is not None:
            raise self.fail
        with transaction(self.engine) as session:
            job = Job(name=path.stem, source=path.read_text(), code_timeout=60.0)
            session.add(job)
            session.flush()
            assert job.id is not None
            return job.id

    def files(self) -> list[str]:
        with self.lock:
            return [name for _, name in self.calls]


class Running:
    """``run_scheduler`` in a thread, stopped (and its errors raised) on ``stop()``."""

    def __init__(
        self,
        jobs_dir: Path,
        engine: Engine,
        redis_url: str,
        submit: Submissions,
        clock: Clock,
        **options: Any,
    ) -> None:
        self.stopping = threading.Event()
        self.client = redis.Redis.from_url(redis_url)
        self.errors: list[BaseException] = []
        options.setdefault("lock_ttl", TTL)

        def target() -> None:
            try:
                run_scheduler(
                    jobs_dir,
                    engine=engine,
                    redis_client=self.client,
                    submit=submit,
                    tick=TICK,
                    stop=self.stopping,
                    now=clock,
                    **options,
                )
            except BaseException as exc:
                self.errors.append(exc)

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.client.close()
        assert not self.thread.is_alive()
        if self.errors:
            raise self.errors[0]


def wait_until(condition: Callable[[], bool]) -> None:
    support.wait_until(condition, timeout=5.0, interval=0.02)


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in list(logs) if entry["event"] == name]


def fired(engine: Engine, count: int) -> Callable[[], bool]:
    return lambda: len(fires(engine)) == count


def fires(engine: Engine) -> list[ScheduleFire]:
    with transaction(engine) as session:
        return list(session.exec(select(ScheduleFire).order_by(col(ScheduleFire.id))).all())


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "jobs"
    folder.mkdir()
    return folder


def test_a_restarted_scheduler_does_not_submit_a_fire_the_first_one_did(
    jobs_dir: Path, engine: Engine, redis_url: str
) -> None:
    write_job(jobs_dir, JOB.format(name="nightly", cron="0 3 * * *"), "nightly.yaml")
    clock = Clock(NIGHT)
    submit = Submissions(engine)

    with capture_logs() as logs:
        first = Running(jobs_dir, engine, redis_url, submit, clock)
        wait_until(lambda: bool(fires(engine)) and fires(engine)[0].outcome == Outcome.SUBMITTED)
        time.sleep(5 * TICK)
        first.stop()
        second = Running(jobs_dir, engine, redis_url, submit, clock)
        wait_until(lambda: len(events(logs, "scheduler_active")) == 2)
        time.sleep(10 * TICK)
        second.stop()

    assert len(events(logs, "schedule_loaded")) == 2, "each scheduler read the job file"
    assert submit.files() == ["nightly.yaml"]
    (fire,) = fires(engine)
    assert (fire.job_name, fire.fire_at, fire.outcome) == ("nightly", NIGHT, Outcome.SUBMITTED)
    with transaction(engine) as session:
        job = session.get(Job, fire.job_id)
    assert job is not None and job.name == "nightly"


class Crash(BaseException):
    """The process dying in the middle of a submission."""


def test_a_scheduler_that_dies_while_submitting_does_not_submit_that_fire_again(
    jobs_dir: Path, engine: Engine, redis_url: str
) -> None:
    write_job(jobs_dir, JOB.format(name="nightly", cron="0 3 * * *"), "nightly.yaml")
    clock = Clock(NIGHT)
    dying = Submissions(engine)
    dying.fail = Crash()
    client = redis.Redis.from_url(redis_url)

    with pytest.raises(Crash):
        run_scheduler(
            jobs_dir, engine=engine, redis_client=client, submit=dying, tick=TICK, now=clock
        )
    client.close()
    restarted = Submissions(engine)
    with capture_logs() as logs:
        second = Running(jobs_dir, engine, redis_url, restarted, clock)
        wait_until(lambda: bool(events(logs, "schedule_loaded")))
        time.sleep(10 * TICK)
        second.stop()

    assert dying.files() == ["nightly.yaml"]
    assert restarted.files() == []
    (fire,) = fires(engine)
    assert (fire.outcome, fire.job_id) == (Outcome.CLAIMED, None)


def test_two_schedulers_on_one_redis_elect_one_and_only_it_submits(
    jobs_dir: Path, engine: Engine, redis_url: str
) -> None:
    write_job(jobs_dir, JOB.format(name="often", cron="* * * * *"), "often.yaml")
    clock = Clock(NIGHT)
    submit_a, submit_b = Submissions(engine, "a"), Submissions(engine, "b")

    with capture_logs() as logs:
        a = Running(jobs_dir, engine, redis_url, submit_a, clock)
        b = Running(jobs_dir, engine, redis_url, submit_b, clock)
        for minute in range(1, 7):
            wait_until(fired(engine, minute))
            clock.now += timedelta(minutes=1)
        wait_until(fired(engine, 7))
        time.sleep(5 * TICK)
        a.stop()
        b.stop()

    calls = submit_a.calls + submit_b.calls
    assert len(calls) == 7
    assert len({who for who, _ in calls}) == 1, "all fires came from the one active scheduler"
    active = {entry["instance"] for entry in events(logs, "scheduler_active")}
    standby = {entry["instance"] for entry in events(logs, "scheduler_standby")}
    assert len(active) == 1
    assert len(standby) == 1
    assert active != standby
    assert [f.outcome for f in fires(engine)] == [Outcome.SUBMITTED] * 7


def test_a_standby_takes_over_when_the_active_scheduler_hangs_and_the_hung_one_steps_down(
    jobs_dir: Path, engine: Engine, redis_url: str
) -> None:
    write_job(jobs_dir, JOB.format(name="often", cron="* * * * *"), "often.yaml")
    clock = Clock(NIGHT)
    hung, standby = Submissions(engine, "hung"), Submissions(engine, "standby")
    hung.hang = threading.Event()

    with capture_logs() as logs:
        a = Running(jobs_dir, engine, redis_url, hung, clock, lock_ttl=SHORT_TTL)
        wait_until(lambda: len(hung.calls) == 1)  # stuck inside its first submission
        b = Running(jobs_dir, engine, redis_url, standby, clock, lock_ttl=SHORT_TTL)
        wait_until(lambda: len(events(logs, "scheduler_active")) == 2)
        clock.now += timedelta(minutes=1)
        wait_until(lambda: len(standby.calls) == 1)
        hung.hang.set()
        wait_until(lambda: bool(events(logs, "scheduler_lost_lock")))
        time.sleep(5 * TICK)
        a.stop()
        b.stop()

    assert hung.files() == ["often.yaml"]
    assert standby.files() == ["often.yaml"]
    assert [(f.fire_at, f.outcome) for f in fires(engine)] == [
        (NIGHT, Outcome.SUBMITTED),
        (NIGHT + timedelta(minutes=1), Outcome.SUBMITTED),
    ]
    takeover = [entry["instance"] for entry in events(logs, "scheduler_active")]
    (lost,) = events(logs, "scheduler_lost_lock")
    assert lost["instance"] == takeover[0]
    assert lost["holder"] == takeover[1]


def test_a_scheduler_stopped_cleanly_hands_over_at_once_not_after_its_lock_expires(
    jobs_dir: Path, engine: Engine, redis_url: str
) -> None:
    clock = Clock(NIGHT)
    with capture_logs() as logs:
        a = Running(jobs_dir, engine, redis_url, Submissions(engine), clock, lock_ttl=30.0)
        wait_until(lambda: len(events(logs, "scheduler_active")) == 1)
        b = Running(jobs_dir, engine, redis_url, Submissions(engine), clock, lock_ttl=30.0)
        wait_until(lambda: bool(events(logs, "scheduler_standby")))
        started = time.monotonic()
        a.stop()
        wait_until(lambda: len(events(logs, "scheduler_active")) == 2)
        handover = time.monotonic() - started
        b.stop()

    assert handover < 2.0
    assert redis.Redis.from_url(redis_url).exists(LOCK_KEY) == 0, "released on the way out"


def test_two_schedulers_that_both_believe_they_are_active_still_submit_each_fire_once(
    jobs_dir: Path, engine: Engine, redis_url: str
) -> None:
    # Split brain (two Redis servers, or a lock lost mid-tick): only the database stands guard.
    write_job(jobs_dir, JOB.format(name="often", cron="* * * * *"), "often.yaml")
    clock = Clock(NIGHT)
    client = redis.Redis.from_url(redis_url)
    submissions = [Submissions(engine, "a"), Submissions(engine, "b")]
    stop = threading.Event()
    schedulers = [
        Scheduler(
            jobs_dir,
            engine=engine,
            lock=RedisLock(client, f"{LOCK_KEY}:{submit.who}", ttl=TTL),
            submit=submit,
            catch_up=timedelta(hours=1),
            now=clock,
            stop=stop,
        )
        for submit in submissions
    ]
    threads = [threading.Thread(target=s.run, args=(0.01,), daemon=True) for s in schedulers]

    with capture_logs() as logs:
        for thread in threads:
            thread.start()
        for minute in range(1, 6):
            wait_until(fired(engine, minute))
            time.sleep(0.05)  # both look at the same due fire several times
            clock.now += timedelta(minutes=1)
        wait_until(fired(engine, 6))
        time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(10)
    client.close()

    assert len({entry["instance"] for entry in events(logs, "scheduler_active")}) == 2
    assert len(submissions[0].calls) + len(submissions[1].calls) == 6
    assert [(f.fire_at, f.outcome) for f in fires(engine)] == [
        (NIGHT + timedelta(minutes=m), Outcome.SUBMITTED) for m in range(6)
    ]


def test_the_lock_is_refreshed_and_released_only_by_its_holder(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    holder = RedisLock(client, LOCK_KEY, ttl=SHORT_TTL)
    other = RedisLock(client, LOCK_KEY, ttl=SHORT_TTL)

    assert holder.acquire()
    assert not other.acquire()
    assert not other.refresh()
    assert not other.release()
    assert other.holder() == holder.token
    assert holder.refresh()
    time.sleep(SHORT_TTL + 0.1)  # the holder died: nobody refreshed
    assert other.acquire()
    assert not holder.refresh(), "a late holder cannot extend a lock another took"
    assert not holder.release()
    assert other.holder() == other.token
    assert other.release()
    assert other.holder() is None
    client.close()


def test_a_bad_job_file_is_reported_once_and_the_other_jobs_still_run(
    jobs_dir: Path, engine: Engine, redis_url: str
) -> None:
    write_job(jobs_dir, JOB.format(name="good", cron="0 3 * * *"), "good.yaml")
    bad = JOB.format(name="broken", cron="0 3 * * *").replace("quantity: 1", "quantity: 0")
    write_job(jobs_dir, bad, "broken.yml")
    write_job(jobs_dir, JOB.format(name="good", cron="0 3 * * *"), "same-name.yaml")
    unscheduled = JOB.format(name="manual", cron="").replace('schedule: ""\n', "")
    write_job(jobs_dir, unscheduled, "manual.yaml")
    write_job(jobs_dir, "not a job", "notes.txt")
    write_job(jobs_dir, "half-written: [", ".good.yaml.swp.yaml")
    submit = Submissions(engine)

    with capture_logs() as logs:
        running = Running(jobs_dir, engine, redis_url, submit, Clock(NIGHT))
        wait_until(lambda: submit.files() == ["good.yaml"])
        time.sleep(10 * TICK)
        running.stop()

    assert submit.files() == ["good.yaml"]
    problems = {entry["file"]: entry["error"] for entry in events(logs, "schedule_file_invalid")}
    assert sorted(Path(file).name for file in problems) == ["broken.yml", "same-name.yaml"]
    assert len(events(logs, "schedule_file_invalid")) == 2, "each reported once, not every tick"
    broken = problems[str(jobs_dir / "broken.yml")]
    assert "broken.yml: targets[0].quantity: must be a whole number of at least 1" in broken
    assert "'good' is also the name of" in problems[str(jobs_dir / "same-name.yaml")]


@pytest.mark.parametrize(
    ("failure", "outcome", "event"),
    [
        (JobOverlap("job 7 ('nightly') is still active"), Outcome.SKIPPED_OVERLAP, "overlap"),
        (ProviderUnavailable(503), Outcome.FAILED, "submit_failed"),
    ],
)
def test_a_fire_whose_submission_fails_counts_as_done_and_is_not_retried(
    jobs_dir: Path,
    engine: Engine,
    redis_url: str,
    failure: Exception,
    outcome: Outcome,
    event: str,
) -> None:
    write_job(jobs_dir, JOB.format(name="nightly", cron="0 3 * * *"), "nightly.yaml")
    submit = Submissions(engine)
    submit.fail = failure

    with capture_logs() as logs:
        running = Running(jobs_dir, engine, redis_url, submit, Clock(NIGHT))
        wait_until(lambda: bool(fires(engine)) and fires(engine)[0].outcome == outcome)
        time.sleep(10 * TICK)
        running.stop()

    assert submit.files() == ["nightly.yaml"]
    (fire,) = fires(engine)
    assert (fire.job_id, fire.error) == (None, str(failure))
    name = "schedule_skipped_overlap" if event == "overlap" else "schedule_submit_failed"
    (logged,) = events(logs, name)
    assert logged["job_name"] == "nightly"


def test_a_fire_missed_by_more_than_the_catch_up_window_is_reported_and_not_run(
    jobs_dir: Path, engine: Engine, redis_url: str
) -> None:
    write_job(jobs_dir, JOB.format(name="nightly", cron="0 3 * * *"), "nightly.yaml")
    with transaction(engine) as session:
        session.add(ScheduleFire(job_name="nightly", fire_at=NIGHT - timedelta(days=1)))
    submit = Submissions(engine)

    with capture_logs() as logs:
        running = Running(jobs_dir, engine, redis_url, submit, Clock(at("2026-03-10T09:00")))
        wait_until(lambda: bool(events(logs, "schedule_missed")))
        time.sleep(10 * TICK)
        running.stop()

    assert submit.files() == []
    (missed,) = events(logs, "schedule_missed")
    assert (missed["fire_at"], missed["late_by"]) == (NIGHT.isoformat(), "6:00:00")


def test_a_job_file_first_seen_after_its_time_waits_for_the_next_one(
    jobs_dir: Path, engine: Engine, redis_url: str
) -> None:
    write_job(jobs_dir, JOB.format(name="nightly", cron="0 3 * * *"), "nightly.yaml")
    clock = Clock(NIGHT + timedelta(minutes=10))  # the file is new: 03:00 passed unseen
    submit = Submissions(engine)

    with capture_logs() as logs:
        running = Running(jobs_dir, engine, redis_url, submit, clock)
        wait_until(lambda: bool(events(logs, "schedule_loaded")))
        time.sleep(10 * TICK)
        assert submit.files() == [], "a time past before the file was seen does not fire"
        clock.now = NIGHT + timedelta(days=1, seconds=1)
        wait_until(fired(engine, 1))
        time.sleep(5 * TICK)
        running.stop()

    assert submit.files() == ["nightly.yaml"]
    assert [f.fire_at for f in fires(engine)] == [NIGHT + timedelta(days=1)]
    assert not events(logs, "schedule_missed")
    (started,) = events(logs, "scheduler_started")
    assert "`orchestrator worker`" in started["note"], "it says workers must run elsewhere"


def test_the_overlap_refusal_suggests_allow_overlap_only_where_that_option_exists(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli.common import guard
    from orchestrator.db import store
    from orchestrator.jobs.submit import job_plan
    from tests.inprocess import telegram_job

    plan = job_plan(telegram_job(quantity=1, budget=None, name="nightly"))
    with transaction(engine) as session:
        store.submit_job(session, plan, source="first")
    with pytest.raises(JobOverlap) as refused, transaction(engine) as session:
        store.submit_job(session, plan, source="second")
    assert "--allow-overlap" not in str(refused.value), "the scheduler has no such option"

    with pytest.raises(typer.Exit), guard():  # what submit and run say of the same refusal
        raise refused.value
    assert "(use --allow-overlap to run both)" in capsys.readouterr().err


def test_the_schedulers_help_says_it_needs_workers_elsewhere() -> None:
    result = CliRunner().invoke(app, ["scheduler", "--help"], env={"COLUMNS": "300"})

    assert result.exit_code == 0
    text = " ".join(result.output.replace("│", " ").split())  # the panel's wrapping undone
    assert "run `orchestrator worker` (or `docker compose up`) elsewhere too" in text


def test_a_jobs_folder_that_does_not_exist_is_refused(tmp_path: Path, redis_url: str) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(SpecError, match="is not a folder of job files"):
        run_scheduler(
            tmp_path / "missing",
            engine=engine,
            redis_client=redis.Redis.from_url(redis_url),
            submit=Submissions(engine),
        )
