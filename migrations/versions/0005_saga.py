"""pre: create the saga instance, step log, timer and participant decision tables

Revision ID: 0005_saga
Revises: 0004_inbox
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from outbox.tables import JSONText

revision: str = "0005_saga"
down_revision: str | None = "0004_inbox"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _saga_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["saga_id"], ["outboxkit_saga.id"], name=f"fk_{table}_saga_id", ondelete="CASCADE"
    )


def upgrade() -> None:
    """Create the saga tables."""
    op.create_table(
        "outboxkit_saga",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("data", JSONText(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("correlation_id", sa.String(255), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outboxkit_saga"),
    )
    op.create_index("ix_outboxkit_saga_type_state", "outboxkit_saga", ["type", "state"])
    op.create_table(
        "outboxkit_saga_step_log",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("step_name", sa.String(128), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outboxkit_saga_step_log"),
        _saga_fk("outboxkit_saga_step_log"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_outboxkit_saga_step_log_saga_id_id", "outboxkit_saga_step_log", ["saga_id", "id"])
    op.create_table(
        "outboxkit_saga_timer",
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("fires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("saga_id", "name", name="pk_outboxkit_saga_timer"),
        _saga_fk("outboxkit_saga_timer"),
    )
    op.create_table(
        "outboxkit_saga_participant",
        sa.Column("saga_id", sa.Uuid(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=True),
        sa.Column("data", JSONText(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("compensated", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("saga_id", "step", name="pk_outboxkit_saga_participant"),
    )


def downgrade() -> None:
    """Drop the saga tables."""
    op.drop_table("outboxkit_saga_participant")
    op.drop_table("outboxkit_saga_timer")
    op.drop_table("outboxkit_saga_step_log")
    op.drop_table("outboxkit_saga")
