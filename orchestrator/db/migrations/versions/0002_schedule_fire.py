"""The schedule's claimed fire times: schedulefire, UNIQUE(job_name, fire_at).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "schedulefire",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_name", sa.String(), nullable=False),
        sa.Column("fire_at", sa.DateTime(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name="schedulefire_job_id_fkey"),
        sa.PrimaryKeyConstraint("id", name="schedulefire_pkey"),
        sa.UniqueConstraint("job_name", "fire_at", name="schedulefire_job_name_fire_at_key"),
    )
    op.create_index("ix_schedulefire_job_name", "schedulefire", ["job_name"])


def downgrade() -> None:
    op.drop_table("schedulefire")
