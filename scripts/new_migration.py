"""Write the next schema revision: what the models have that the newest migration lacks.

A developer tool, not part of the orchestrator: run it from a checkout after changing
``orchestrator/db/models.py``, then read and edit the revision it writes::

    .venv/bin/python scripts/new_migration.py "add the schedule table"

It migrates a scratch SQLite database to the newest revision and lets Alembic's autogenerate
compare it with the models; the new revision is numbered after the newest one.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from orchestrator.db.engine import make_engine
from orchestrator.db.migrate import alembic_config, head_revision, upgrade


def new_revision(message: str) -> Path:
    """Write the next revision file and return its path."""
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'head.db'}")
        try:
            upgrade(engine)
            with engine.connect() as conn, conn.begin():
                script = command.revision(
                    alembic_config(conn),
                    message,
                    autogenerate=True,
                    rev_id=f"{int(head_revision()) + 1:04d}",
                )
        finally:
            engine.dispose()
    assert script is not None and not isinstance(script, list)
    return Path(script.path)


if __name__ == "__main__":
    print(new_revision(" ".join(sys.argv[1:]) or "new revision"))
