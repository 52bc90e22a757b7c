"""Wallet checkpoints, and what an in-doubt purchase needs to be settled by one.

``wallet_checkpoint`` holds the balances read at quiet moments beside the ledger's totals;
``activation.quoted_micros`` the price a purchase was sent at, ``activation.settle_pending``
an in-doubt purchase waiting for a checkpoint to settle it (``exclusive_key``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "walletcheckpoint",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(), nullable=False),
        sa.Column("balance_micros", sa.BigInteger(), nullable=False),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.Column("refunded_micros", sa.BigInteger(), nullable=False),
        sa.Column("in_doubt_micros", sa.BigInteger(), nullable=False),
        sa.Column("in_doubt_ids", sa.String(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("settling_stopped", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_walletcheckpoint_key", "walletcheckpoint", ["key"])
    op.create_index("ix_walletcheckpoint_at", "walletcheckpoint", ["at"])
    with op.batch_alter_table("activation") as batch:
        batch.add_column(sa.Column("quoted_micros", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("settle_pending", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("activation") as batch:
        batch.drop_column("settle_pending")
        batch.drop_column("quoted_micros")
    op.drop_index("ix_walletcheckpoint_at", "walletcheckpoint")
    op.drop_index("ix_walletcheckpoint_key", "walletcheckpoint")
    op.drop_table("walletcheckpoint")
