"""activation.code_after: the last moment the order was seen without its code.

A code came between ``code_after`` and ``code_at``; the polling policy learns arrival delays
from the middle of that span rather than from the poll that read the code, which under a
tight rate limit may come long after (rows from before stay NULL: their ``code_at`` is used).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("activation") as batch:
        batch.add_column(sa.Column("code_after", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("activation") as batch:
        batch.drop_column("code_after")
