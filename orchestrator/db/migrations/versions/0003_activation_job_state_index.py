"""An index on activation(job_id, state): whether a job still has live slots, in one seek.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_activation_job_id_state", "activation", ["job_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_activation_job_id_state", table_name="activation")
