"""target.codes_wanted and activation.attempt: a target may ask for codes, not numbers.

A ``codes: N`` target keeps buying until N codes came (``target.quantity`` is then the most
numbers it may buy); ``attempt`` numbers a target's slots 1, 2, ... in the order planned.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("target") as batch:
        batch.add_column(sa.Column("codes_wanted", sa.Integer(), nullable=True))
    with op.batch_alter_table("activation") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
    # Slots planned before: their order within the target, from the job's slot numbers.
    op.execute(
        "UPDATE activation SET attempt = 1 + slot - ("
        "SELECT MIN(a2.slot) FROM activation AS a2 WHERE a2.target_id = activation.target_id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("activation") as batch:
        batch.drop_column("attempt")
    with op.batch_alter_table("target") as batch:
        batch.drop_column("codes_wanted")
