"""Statements compiled once run exactly as SQLAlchemy would run them, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.exc import StatementError
from sqlmodel import col

from orchestrator.db import prepared
from orchestrator.db.engine import create_tables, make_engine, transaction
from orchestrator.db.models import Event, Job, JobStatus
from tests.inprocess import plan_job

AT = datetime(2026, 11, 25, 7, 30, 1, 123456, tzinfo=UTC)
_RECORD = insert(Event).inline()
_RECORD_BARE = insert(Event)
_RESERVE_IF_ACTIVE = (
    update(Job)
    .where(col(Job.id) == bindparam("p_id"), col(Job.status) == JobStatus.ACTIVE)
    .values(reserved_micros=col(Job.reserved_micros) + bindparam("p_delta"))
)


def _events(engine: Engine) -> list[tuple[str, str, datetime]]:
    with transaction(engine) as session:
        rows = session.execute(
            select(col(Event.kind), col(Event.detail), col(Event.at)).order_by(col(Event.id))
        )
        return [(kind, detail, at) for kind, detail, at in rows]


def test_bound_values_go_through_their_column_types(engine: Engine) -> None:
    plan_job(engine, quantity=1)  # job 1
    params = {"job_id": 1, "activation_id": None, "at": AT, "kind": "k", "detail": '{"a": 1}'}
    with transaction(engine) as session:
        result = prepared.execute(session.connection(), "t-record", _RECORD, params)
        assert result.rowcount == 1
    assert ("k", '{"a": 1}', AT) in _events(engine)  # a UTC datetime, read back as stored


def test_a_column_left_to_its_default_gets_it(engine: Engine) -> None:
    plan_job(engine, quantity=1)
    params = {"job_id": 1, "at": AT, "kind": "no-detail"}  # detail defaults to ""
    with transaction(engine) as session:
        prepared.execute(session.connection(), "t-record-bare", _RECORD_BARE, params)
    assert ("no-detail", "", AT) in _events(engine)


def test_a_literal_in_the_where_clause_is_kept(engine: Engine) -> None:
    plan_job(engine, quantity=1)
    shape, params = "t-reserve", {"p_id": 1, "p_delta": 5}
    with transaction(engine) as session:
        first = prepared.execute(session.connection(), shape, _RESERVE_IF_ACTIVE, params)
        assert first.rowcount == 1
        session.execute(update(Job).values(status=JobStatus.FINISHED))
        second = prepared.execute(session.connection(), shape, _RESERVE_IF_ACTIVE, params)
        assert second.rowcount == 0  # the job is no longer ACTIVE
    with transaction(engine) as session:
        assert session.execute(select(col(Job.reserved_micros))).scalar_one() == 5


def test_an_expanding_in_runs_the_ordinary_way(engine: Engine) -> None:
    plan_job(engine, quantity=1)
    statement = update(Job).where(col(Job.status).in_([JobStatus.ACTIVE, JobStatus.FINISHED]))
    statement = statement.values(reserved_micros=bindparam("p_value"))
    with transaction(engine) as session:
        result = prepared.execute(session.connection(), "t-in", statement, {"p_value": 7})
        assert result.rowcount == 1


def test_a_missing_parameter_is_refused_as_sqlalchemy_refuses_it(engine: Engine) -> None:
    plan_job(engine, quantity=1)
    with transaction(engine) as session, pytest.raises(StatementError, match="p_delta"):
        prepared.execute(session.connection(), "t-missing", _RESERVE_IF_ACTIVE, {"p_id": 1})


def test_a_bind_whose_value_is_a_function_calls_it_every_time(engine: Engine) -> None:
    plan_job(engine, quantity=1)
    values = iter(range(10, 20))
    statement = update(Job).values(
        reserved_micros=bindparam("p_next", callable_=lambda: next(values))
    )
    with transaction(engine) as session:
        for _ in range(2):
            prepared.execute(session.connection(), "t-callable", statement, {})
        assert session.execute(select(col(Job.reserved_micros))).scalar_one() == 11


@pytest.mark.postgres
def test_one_shape_is_compiled_for_each_database(sqlite_url: str, postgres_url: str) -> None:
    engines = {url: make_engine(url) for url in (sqlite_url, postgres_url)}
    for engine in engines.values():
        create_tables(engine)
        plan_job(engine, quantity=1)
    try:
        for turn, url in enumerate((sqlite_url, postgres_url, sqlite_url)):
            kind = f"turn-{turn}"
            params = {"job_id": 1, "activation_id": None, "at": AT, "kind": kind, "detail": ""}
            with transaction(engines[url]) as session:
                prepared.execute(session.connection(), "t-both", _RECORD, params)
            assert (kind, "", AT) in _events(engines[url])
    finally:
        for engine in engines.values():
            engine.dispose()
