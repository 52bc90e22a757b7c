"""The tables metadata.create_all made before there were migrations: job, target, activation, event.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

Constraints carry PostgreSQL's own default names, so a PostgreSQL database made by
``create_all`` and adopted at this revision is the same, name for name, as one migrated from
empty; on SQLite the names make them droppable by later batch migrations.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("budget_micros", sa.BigInteger(), nullable=True),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.Column("code_timeout", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("cancel_requested_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="job_pkey"),
    )
    op.create_index("ix_job_name", "job", ["name"])
    op.create_index("ix_job_status", "job", ["status"])

    op.create_table(
        "target",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("service_name", sa.String(), nullable=False),
        sa.Column("countries", sa.String(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("max_price_micros", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name="target_job_id_fkey"),
        sa.PrimaryKeyConstraint("id", name="target_pkey"),
        sa.UniqueConstraint("job_id", "position", name="target_job_id_position_key"),
    )
    op.create_index("ix_target_job_id", "target", ["job_id"])

    op.create_table(
        "activation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("target_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("service_id", sa.Integer(), nullable=False),
        sa.Column("country_id", sa.Integer(), nullable=True),
        sa.Column("country_name", sa.String(), nullable=True),
        sa.Column("cap_micros", sa.BigInteger(), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.String(), nullable=True),
        sa.Column("phone", sa.String(), nullable=True),
        sa.Column("cost_micros", sa.BigInteger(), nullable=True),
        sa.Column("code", sa.String(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_attempts", sa.Integer(), nullable=False),
        sa.Column("cancel_sent_at", sa.DateTime(), nullable=True),
        sa.Column("cancel_reason", sa.String(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("next_action_at", sa.DateTime(), nullable=True),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("ordered_at", sa.DateTime(), nullable=True),
        sa.Column("code_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name="activation_job_id_fkey"),
        sa.ForeignKeyConstraint(["target_id"], ["target.id"], name="activation_target_id_fkey"),
        sa.PrimaryKeyConstraint("id", name="activation_pkey"),
        sa.UniqueConstraint("job_id", "slot", name="activation_job_id_slot_key"),
        sa.UniqueConstraint("order_id", name="activation_order_id_key"),
    )
    op.create_index("ix_activation_job_id", "activation", ["job_id"])
    op.create_index("ix_activation_next_action_at", "activation", ["next_action_at"])
    op.create_index("ix_activation_state", "activation", ["state"])
    op.create_index("ix_activation_target_id", "activation", ["target_id"])

    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("activation_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("detail", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["activation_id"], ["activation.id"], name="event_activation_id_fkey"
        ),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name="event_job_id_fkey"),
        sa.PrimaryKeyConstraint("id", name="event_pkey"),
    )
    op.create_index("ix_event_activation_id", "event", ["activation_id"])
    op.create_index("ix_event_job_id", "event", ["job_id"])


def downgrade() -> None:
    op.drop_table("event")
    op.drop_table("activation")
    op.drop_table("target")
    op.drop_table("job")
