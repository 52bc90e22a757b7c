"""Two submits of one job at once: exactly one is planned, the other is refused as an overlap.

On SQLite a write transaction begins with BEGIN IMMEDIATE, which already serialises them; on
PostgreSQL two READ COMMITTED transactions could both find no active job and both insert one,
so every number would be bought twice once workers ran.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from orchestrator.cli.exit_codes import ExitCode
from orchestrator.db import queries, store
from orchestrator.db.engine import create_tables, make_engine, transaction
from orchestrator.db.models import Job
from orchestrator.errors import JobOverlap
from orchestrator.jobs.resolve import ResolvedJob
from orchestrator.jobs.submit import job_plan
from orchestrator.sandbox.server import SandboxServer
from tests.inprocess import telegram_job
from tests.support import COMMAND, Orchestrator, fast_env, write_job

HOLD = 3.0  # how long the first check waits for the others before it goes on


def resolved(name: str = "nightly") -> ResolvedJob:
    return telegram_job(quantity=3, name=name, code_timeout=60.0)


def hold_first_check(monkeypatch: pytest.MonkeyPatch, submitters: int) -> None:
    """Make the first submitter that has checked wait (its transaction open) until every other
    one has checked too, or ``HOLD`` seconds: the widest window the race can have."""
    original = queries.active_job_named
    lock = threading.Lock()
    checked: list[str] = []
    all_checked = threading.Event()

    def held(session: Session, name: str) -> Job | None:
        found = original(session, name)
        with lock:
            checked.append(name)
            count = len(checked)
        if count == submitters:
            all_checked.set()
        if count == 1:
            all_checked.wait(HOLD)
        return found

    monkeypatch.setattr(queries, "active_job_named", held)


def submit_at_once(engine: Engine, submitters: int, *, allow_overlap: bool = False) -> list[object]:
    """Each thread, on its own connection, checks and plans the same job after a barrier."""
    barrier = threading.Barrier(submitters)
    outcomes: list[object] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        try:
            with transaction(engine) as session:
                job, _ = store.submit_job(
                    session, job_plan(resolved()), source="test", allow_overlap=allow_overlap
                )
            outcome: object = job.id
        except Exception as exc:  # every outcome is asserted on below
            outcome = exc
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(submitters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(outcomes) == submitters
    return outcomes


def jobs_named(engine: Engine, name: str = "nightly") -> int:
    with Session(engine) as session:
        query = select(func.count()).select_from(Job).where(col(Job.name) == name)
        return int(session.execute(query).scalar_one())


def test_simultaneous_submits_of_one_name_plan_one_job(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    hold_first_check(monkeypatch, submitters=2)

    outcomes = submit_at_once(engine, 2)

    assert jobs_named(engine) == 1, outcomes
    assert sorted(type(o).__name__ for o in outcomes) == ["JobOverlap", "int"]
    [refusal] = [o for o in outcomes if isinstance(o, JobOverlap)]
    assert "is still active" in str(refusal)


def test_many_simultaneous_submits_plan_one_job(engine: Engine) -> None:
    for _ in range(3):
        outcomes = submit_at_once(engine, 6)
        assert sum(isinstance(o, int) for o in outcomes) <= 1, outcomes
        assert all(isinstance(o, int | JobOverlap) for o in outcomes), outcomes
    assert jobs_named(engine) == 1


def test_allow_overlap_still_plans_every_one(engine: Engine) -> None:
    outcomes = submit_at_once(engine, 3, allow_overlap=True)

    assert all(isinstance(o, int) for o in outcomes), outcomes
    assert jobs_named(engine) == 3


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.mark.postgres
def test_a_submit_waits_only_for_its_own_name(pg_engine: Engine) -> None:
    done = threading.Event()

    def other_name() -> None:
        with transaction(pg_engine) as session:
            store.submit_job(session, job_plan(resolved("b")), source="test")
        done.set()

    with transaction(pg_engine) as session:
        store.submit_job(session, job_plan(resolved("a")), source="test")
        thread = threading.Thread(target=other_name)
        thread.start()  # while "a"'s transaction is still open
        assert done.wait(10), "a submit of another name waited for this one"
    thread.join()
    assert jobs_named(pg_engine, "a") == jobs_named(pg_engine, "b") == 1


JOB = """\
name: {name}
targets:
  - service: Telegram
    country: 16
    quantity: 2
    max_price: 2.00
"""


@pytest.mark.slow
@pytest.mark.postgres
def test_two_submit_commands_at_once_one_is_refused(
    tmp_path: Path, sandbox: SandboxServer, redis_url: str, postgres_url: str
) -> None:
    orch = Orchestrator(
        workdir=tmp_path, env=fast_env(sandbox.url, redis_url, postgres_url, tmp_path)
    )
    assert orch.run("db", "upgrade").returncode == 0  # both start from a migrated database
    for attempt in range(4):
        job = write_job(tmp_path, JOB.format(name=f"pair-{attempt}"), f"pair-{attempt}.yaml")
        both = [
            subprocess.Popen(
                [*COMMAND, "submit", str(job)],
                cwd=tmp_path,
                env=orch.environ(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(p.wait(120), *p.communicate()) for p in both]
        codes = sorted(code for code, _, _ in results)
        assert codes == [ExitCode.OK, ExitCode.OVERLAP], (attempt, results)
        refused = next(err for code, _, err in results if code == ExitCode.OVERLAP)
        assert "is still active" in refused
    engine = make_engine(postgres_url)
    try:
        for attempt in range(4):
            assert jobs_named(engine, f"pair-{attempt}") == 1
    finally:
        engine.dispose()
