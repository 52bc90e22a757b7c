"""activation.cancel_answer: a refused or unconfirmed cancel is followed by a /status read.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("activation") as batch:
        batch.add_column(sa.Column("cancel_answer", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("activation") as batch:
        batch.drop_column("cancel_answer")
