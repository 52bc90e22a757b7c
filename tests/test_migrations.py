"""Alembic migrations on SQLite and PostgreSQL: from empty, twice, over create_all, at once."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, func, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, select

from orchestrator.db import migrate
from orchestrator.db.engine import create_tables, make_engine, transaction
from orchestrator.db.models import Event, Job
from orchestrator.errors import OrchestratorError

# What ``create_all`` made before migrations existed: the baseline revision's tables, less
# the indexes and columns that later revisions added to them.
BASELINE_TABLES = ("job", "target", "activation", "event")
INDEXES_ADDED_SINCE = ("ix_activation_job_id_state",)
COLUMNS_ADDED_SINCE = (
    ("activation", "cancel_answer"),
    ("target", "codes_wanted"),
    ("activation", "attempt"),
    ("activation", "quoted_micros"),
    ("activation", "settle_pending"),
    ("activation", "code_after"),
)

BROKEN_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "9000"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("UPDATE job SET name = 'touched'")
    raise RuntimeError("this migration fails halfway")
"""


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def add_job(engine: Engine, name: str = "nightly") -> None:
    with transaction(engine) as session:
        session.add(Job(name=name, source="targets: []", code_timeout=60.0))


def job_names(engine: Engine) -> list[str]:
    with transaction(engine) as session:
        return list(session.exec(select(Job.name).order_by(Job.name)).all())


def schema(engine: Engine) -> dict[str, Any]:
    """Every table's columns, keys and indexes, as the database reports them."""
    names = engine.dialect.name == "postgresql"  # SQLite keeps create_all's constraints unnamed
    found = inspect(engine)
    tables: dict[str, Any] = {}
    for table in sorted(set(found.get_table_names()) - {"alembic_version"}):
        tables[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)
            ],
            "primary_key": found.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), i["unique"]) for i in found.get_indexes(table)
            ),
            "unique": sorted(
                (u["name"] if names else None, tuple(u["column_names"]))
                for u in found.get_unique_constraints(table)
            ),
            "foreign_keys": sorted(
                (
                    f["name"] if names else None,
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                )
                for f in found.get_foreign_keys(table)
            ),
        }
    return tables


def drop_everything(engine: Engine) -> None:
    reflected = MetaData()
    reflected.reflect(engine)
    reflected.drop_all(engine)


def test_migrations_from_empty_give_the_schema_the_models_describe(engine: Engine) -> None:
    assert migrate.current_revision(engine) is None

    create_tables(engine)

    assert migrate.current_revision(engine) == migrate.head_revision()
    assert migrate.check_schema(engine) == []
    assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())


def test_check_schema_names_each_difference_from_the_models(engine: Engine) -> None:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_activation_next_action_at"))
        conn.execute(text("ALTER TABLE job ADD COLUMN stray INTEGER"))

    assert sorted(migrate.check_schema(engine)) == [
        "add_index ix_activation_next_action_at on activation(next_action_at)",
        "remove_column job.stray",
    ]


def test_migrations_make_the_same_schema_as_create_all_did(engine: Engine) -> None:
    # Adopting a create_all database at head is only right if the two are the same.
    SQLModel.metadata.create_all(engine)
    made_by_create_all = schema(engine)
    drop_everything(engine)

    migrate.upgrade(engine)

    assert schema(engine) == made_by_create_all


def test_upgrading_twice_changes_nothing(engine: Engine) -> None:
    migrate.upgrade(engine)
    add_job(engine)

    migrate.upgrade(engine)

    assert job_names(engine) == ["nightly"]
    assert migrate.current_revision(engine) == migrate.head_revision()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


@pytest.mark.parametrize("tables", ["baseline", "current"])
def test_a_database_made_by_create_all_is_adopted_and_keeps_its_rows(
    engine: Engine, tables: str
) -> None:
    chosen = BASELINE_TABLES if tables == "baseline" else tuple(SQLModel.metadata.tables)
    SQLModel.metadata.create_all(engine, tables=[SQLModel.metadata.tables[t] for t in chosen])
    if tables == "baseline":
        with engine.begin() as conn:
            for index in INDEXES_ADDED_SINCE:
                conn.execute(text(f"DROP INDEX {index}"))
            for table, column in COLUMNS_ADDED_SINCE:
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
    add_job(engine, "made-before-migrations")

    create_tables(engine)

    assert migrate.current_revision(engine) == migrate.head_revision()
    assert migrate.check_schema(engine) == []
    add_job(engine, "made-after")
    assert job_names(engine) == ["made-after", "made-before-migrations"]


def test_concurrent_upgrades_of_a_fresh_database_all_succeed(database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(4)]  # one pool each, like processes
    start = threading.Barrier(len(engines))
    failures: list[BaseException] = []

    def upgrade(engine: Engine) -> None:
        start.wait()
        try:
            migrate.upgrade(engine)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=upgrade, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert failures == []
        assert migrate.current_revision(engines[0]) == migrate.head_revision()
        assert migrate.check_schema(engines[0]) == []
    finally:
        for engine in engines:
            engine.dispose()


@contextmanager
def broken_next_revision(folder: Path) -> Iterator[None]:
    """The migrations, plus a newer revision that changes things and then fails."""
    copy = folder / "migrations"
    shutil.copytree(migrate.MIGRATIONS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    broken = BROKEN_REVISION.format(head=migrate.head_revision())
    (copy / "versions" / "9000_broken.py").write_text(broken)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(migrate, "MIGRATIONS", copy)
        migrate._script.cache_clear()
        try:
            yield
        finally:
            migrate._script.cache_clear()


def test_a_migration_that_fails_halfway_leaves_the_database_as_it_was(
    engine: Engine, tmp_path: Path
) -> None:
    migrate.upgrade(engine)
    add_job(engine)
    before = schema(engine)

    with broken_next_revision(tmp_path), pytest.raises(RuntimeError, match="fails halfway"):
        migrate.upgrade(engine)

    assert migrate.current_revision(engine) == migrate.head_revision()
    assert schema(engine) == before
    assert job_names(engine) == ["nightly"]


def test_a_database_migrated_by_a_newer_version_is_refused_untouched(engine: Engine) -> None:
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    with pytest.raises(OrchestratorError, match=r"'9999'.*upgrade the orchestrator"):
        create_tables(engine)

    assert migrate.current_revision(engine) == "9999"


def test_foreign_keys_are_still_enforced_on_sqlite_after_migrating(sqlite_url: str) -> None:
    # Migrations turn enforcement off on their connection; the pool hands that one out next.
    engine = make_engine(sqlite_url)
    try:
        create_tables(engine)
        with pytest.raises(IntegrityError), transaction(engine) as session:
            session.add(Event(job_id=404, kind="orphan"))
        with transaction(engine) as session:
            assert session.exec(select(func.count()).select_from(Event)).one() == 0
    finally:
        engine.dispose()
